// The engine-side state of a request in flight: its group of agents (sampled drafts), their
// token lists and KV block tables. A RequestGroup is owned by the runtime's engine thread once
// submitted; only `cancelled` is touched by other threads. Block tables are changed by the
// scheduler alone (scheduler/scheduler.h); agents decide what happens to a draft (agents/).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "chorus/core/request.h"
#include "chorus/core/utf8.h"
#include "chorus/sampling/sampler.h"

namespace chorus {

class StopMatcher;  // agents/stop_matcher.h

// One agent: a sampled draft of the request, with its own copy of the token list and block
// table (sharing the prompt's full blocks by refcount).
struct AgentSequence {
  int index = 0;
  std::vector<int32_t> tokens;       // prompt + generated
  int computed = 0;                  // tokens whose KV is in the cache
  std::vector<int32_t> block_table;  // one reference per block (the scheduler's to change)
  std::unique_ptr<Sampler> sampler;
  DraftResult draft;  // text, logprobs, finish so far
  Utf8Stream utf8;
  size_t streamed = 0;              // bytes of draft.text already sent as deltas
  std::vector<int32_t> stop_state;  // StopMatcher progress over draft.text
  // Set when it finishes: the merge would count it (tokens, not stopped for low confidence,
  // and the answer regex, if any, matches). Read by the per-step early stops.
  bool has_answer = false;
  bool finished() const { return draft.finish != FinishReason::kNone; }
};

enum class GroupState { kWaiting, kPrefill, kDecode, kDone };

struct RequestGroup {
  explicit RequestGroup(GenerateParams p, std::shared_ptr<ResultSink> s)
      : params(std::move(p)), sink(std::move(s)) {}

  GenerateParams params;
  std::shared_ptr<ResultSink> sink;
  std::atomic<bool> cancelled{false};  // set by any thread (client cancel, Abort)

  // Engine-thread state.
  GroupState state = GroupState::kWaiting;
  std::vector<int32_t> prompt_table;    // shared prompt blocks until the fork (one ref each)
  std::vector<uint64_t> prompt_hashes;  // prefix-cache hash of each full prompt block
  std::vector<int32_t> fork_blocks;     // reserved at admission for copy-on-write at the fork
  int prompt_computed = 0;
  int prompt_published = 0;  // full prompt blocks already registered in the prefix cache
  bool forked = false;       // agents exist (survives preemption)
  // The agents were forked (agents/agent_group.h) and wait for the scheduler to give them
  // block tables from the prompt's (copy-on-write of a partial last block).
  bool fork_pending = false;
  std::vector<AgentSequence> agents;
  int computed_prompt_tokens = 0, cached_prompt_tokens = 0;
  double first_scheduled_ms = -1, first_token_ms = -1;
  bool budget_cut = false;
  std::shared_ptr<const StopMatcher> stop_matcher;  // params.stop, built at the fork
  int synth_agent = -1;  // SYNTHESIZE: index of the extra agent that writes the answer
  bool synth_decided = false;
  uint64_t admit_seq = 0;  // order of arrival (stable tie-break)
  int bypassed = 0;        // times a group behind it was admitted while it waited (aging)
};

}  // namespace chorus

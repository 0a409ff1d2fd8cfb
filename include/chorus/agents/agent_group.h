// The N agents of a request: the fork after the shared prefill, per-token updates (sampling, stop
// strings, limits, streaming deltas that never split UTF-8 or leak a stop string's prefix), early
// stops (FIRST, vote consensus, low confidence) and the final merge. Agents decide what happens to
// a draft; the scheduler carries out what that means for KV blocks (block tables at the fork, frees
// at the finish). Engine thread only.
#pragma once

#include "chorus/core/clock.h"
#include "chorus/sequence/sequence.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {

struct AgentContext {
  const Tokenizer* tokenizer = nullptr;
  const Clock* clock = nullptr;
  int context_length = 0;
  int vocab_size = 0;
};

// The prompt's KV is complete; `logits` [vocab] are the last prompt token's. Creates the
// agents (first time; after a preemption they exist), marks the group for the scheduler to give
// them block tables (fork_pending), and samples the first token of every agent that has none.
void ForkAgents(RequestGroup& g, const float* logits, const AgentContext& ctx);
// Samples agent `agent`'s next token from its logits and applies it.
void SampleNext(RequestGroup& g, int agent, const float* logits, const AgentContext& ctx);
// Applies a token sampled by the backend with the agent's own rule and uniform number.
void ApplySampled(RequestGroup& g, int agent, const SampledToken& token, const AgentContext& ctx);
// Ends an agent's draft (flushes its text, notifies the sink); the scheduler frees its blocks.
void FinishAgent(RequestGroup& g, AgentSequence& a, FinishReason reason, const AgentContext& ctx);
// FIRST: a finished draft stops the rest; VOTE: stop when the vote can no longer change.
void ApplyEarlyStops(RequestGroup& g, const AgentContext& ctx);
bool AllAgentsFinished(const RequestGroup& g);
// SYNTHESIZE: the prompt of the extra pass (the request's tokens as they were, then the drafts
// and "Final answer:" as text), or empty when there is no draft or it cannot fit the context
// with max_tokens to spare.
std::vector<int32_t> SynthesisPrompt(const RequestGroup& g, const AgentContext& ctx);
// Adds the synthesis agent (greedy, its own blocks, prefilled through the decode path).
void StartSynthesis(RequestGroup& g, std::vector<int32_t> prompt);
// Merges the drafts into the response (usage and timings included).
GenerateResult BuildResult(RequestGroup& g, double now_ms);

}  // namespace chorus

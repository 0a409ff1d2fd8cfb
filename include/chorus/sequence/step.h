// What the scheduler asks the engine to run in one forward step, and what comes back. The
// scheduler and the engine meet here and never include each other.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "chorus/sequence/sequence.h"

namespace chorus {

// Tokens [start, start + len) of one sequence: the group's shared prompt (agent = -1) or one
// agent's token list. The last row's logits are returned when `logits`.
struct StepSegment {
  RequestGroup* group = nullptr;
  int agent = -1;
  int start = 0;
  int len = 0;
  bool logits = false;
};

struct StepPlan {
  std::vector<StepSegment> segments;
  // KV block copies (src, dst) the engine runs before the forward: the copy-on-write of a
  // partial last prompt block at the fork. Decided by the scheduler, like every block change.
  std::vector<std::pair<int32_t, int32_t>> block_copies;
  int num_rows() const {
    int n = 0;
    for (const auto& s : segments) n += s.len;
    return n;
  }
  bool empty() const { return segments.empty() && block_copies.empty(); }
};

// Each segment with logits either had its next token sampled where the logits are (decode rows
// of agents without penalties: the engine drew the agent's uniform number before the forward) or
// had its logits copied to the host (the prompt's last row, which forks the agents, and agents
// with penalties, which the host applies).
struct StepOutput {
  std::vector<int> logit_segments;    // segments whose [vocab] logits are in `logits`, plan order
  std::vector<float> logits;          // [logit_segments.size(), vocab]
  std::vector<int> sampled_segments;  // segments whose next token was sampled, plan order
  std::vector<SampledToken> sampled;  // one per sampled segment (logprob under the raw logits)
};

}  // namespace chorus

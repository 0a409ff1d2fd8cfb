// What the scheduler asks the engine to run in one forward step, and what comes back. The
// scheduler and the engine meet here and never include each other.
#pragma once

#include <cstdint>
#include <vector>

#include "chorus/core/request.h"

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
  int num_rows() const {
    int n = 0;
    for (const auto& s : segments) n += s.len;
    return n;
  }
  bool empty() const { return segments.empty(); }
};

struct StepOutput {
  // For each segment with logits (in plan order): its index and [vocab] logits.
  std::vector<int> logit_segments;
  std::vector<float> logits;  // [logit_segments.size(), vocab]
};

}  // namespace chorus

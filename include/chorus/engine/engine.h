// The engine: runs a StepPlan's KV block copies, then turns its segments into one batched
// forward pass (token ids, positions and block
// tables of every segment). Each decode row of an agent without penalties is sampled where the
// logits are (the backend), with the uniform number drawn from the agent's own Sampler before
// the forward; the other rows' logits come to the host for the agents to sample. Either way an
// agent's tokens are those its Sampler alone would pick. Engine thread only.
#pragma once

#include "absl/status/status.h"
#include "chorus/model/executor.h"
#include "chorus/sequence/step.h"

namespace chorus {

class Engine {
 public:
  // `executor` must outlive the engine.
  explicit Engine(ForwardExecutor* executor) : executor_(executor) {}
  absl::Status Step(const StepPlan& plan, StepOutput* out);
  // A forward pass outside any plan (start-up calibration of the step-time predictor).
  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits) {
    return executor_->Forward(batch, logits);
  }

 private:
  ForwardExecutor* executor_;
  ForwardBatch batch_;  // reused across steps
  std::vector<RowSampling> draws_;
  std::vector<int32_t> host_rows_;
};

}  // namespace chorus

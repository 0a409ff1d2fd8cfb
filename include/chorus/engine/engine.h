// The engine: turns a StepPlan into one batched forward pass (token ids, positions and block
// tables of every segment) and returns the requested logits. Sampling stays with the agents,
// which own the per-agent RNGs. Engine thread only.
#pragma once

#include "absl/status/status.h"
#include "chorus/core/step.h"
#include "chorus/model/executor.h"

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
};

}  // namespace chorus

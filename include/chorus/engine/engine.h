// The engine: turns a StepPlan into one batched forward pass (token ids, positions and block
// tables of every segment) and returns the requested logits. Sampling stays with the agents,
// which own the per-agent RNGs. Engine thread only.
#pragma once

#include "absl/status/status.h"
#include "chorus/core/step.h"
#include "chorus/model/transformer.h"

namespace chorus {

class Engine {
 public:
  // All pointers must outlive the engine.
  Engine(const Model* model, Backend* backend, KvCache* kv);
  absl::Status Step(const StepPlan& plan, StepOutput* out);
  // A forward pass outside any plan (start-up calibration of the step-time predictor).
  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits) {
    return transformer_.Forward(batch, logits);
  }
  const Model& model() const { return *model_; }
  KvCache& kv() { return *kv_; }

 private:
  const Model* model_;
  KvCache* kv_;
  Transformer transformer_;
  ForwardBatch batch_;  // reused across steps
};

}  // namespace chorus

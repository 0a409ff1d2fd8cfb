// What the runtime knows about time: the step-time predictor (ms per forward step by rows),
// the prefill cost per prompt token and a loop iteration's overhead beyond its forward step,
// each learned from measured steps (and a start-up calibration). Its own lock: the engine
// thread observes, gRPC threads predict (admission, elastic agents).
#pragma once

#include "absl/base/thread_annotations.h"
#include "chorus/agents/budget.h"
#include "chorus/core/mutex.h"

namespace chorus {

class LatencyModel {
 public:
  // Start-up calibration: a prefill of `prefill_tokens` tokens and steps of 1 and 8 rows.
  void Calibrate(int prefill_tokens, double prefill_ms, double one_row_ms, double eight_rows_ms);
  // A forward step of `rows` rows, `prefill_rows` of them prompt rows, that took `ms`.
  void ObserveStep(int rows, int prefill_rows, double ms);
  // A busy loop iteration's time beyond its forward step (scheduling, sampling, sinks).
  void ObserveIterationOverhead(double ms);

  double StepMs(int rows) const { return steps_.PredictMs(rows); }
  double PrefillMs(int prompt_tokens) const;
  double IterationOverheadMs() const;

 private:
  StepTimePredictor steps_;  // its own lock
  mutable Mutex mu_;
  double prefill_ms_per_token_ ABSL_GUARDED_BY(mu_) = 0.5;  // EMA of measured prefill steps
  double iteration_overhead_ms_ ABSL_GUARDED_BY(mu_) = 0;   // EMA
};

}  // namespace chorus

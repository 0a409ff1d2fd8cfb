// What the runtime knows about time: the step-time predictor (ms per forward step by rows),
// the prefill cost per prompt token, a loop iteration's overhead beyond its forward step and
// how long drafts run, each learned from measured steps and finished drafts (and a start-up
// calibration). Its own lock: the engine thread observes, gRPC threads predict (admission,
// elastic agents).
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

  // A finished draft of `tokens` tokens: its length when it ended on its own (end of text, a
  // stop string); with `at_least` (stopped by max_tokens, consensus, low confidence, budget)
  // only a lower bound, which can raise the estimate but never lower it.
  void ObserveDraftTokens(int tokens, bool at_least = false);
  // Decode steps a new draft is expected to take, for the elastic choice: a high estimate of
  // recent draft lengths (EMA + 2 EMA absolute deviations), capped at max_tokens; max_tokens
  // until kMinDraftSamples drafts have been seen.
  int ExpectedDraftTokens(int max_tokens) const;
  static constexpr int kMinDraftSamples = 8;

  double StepMs(int rows, int steps = 1) const { return steps_.PredictMs(rows, steps); }
  double PrefillMs(int prompt_tokens) const;
  double IterationOverheadMs() const;

 private:
  StepTimePredictor steps_;  // its own lock
  mutable Mutex mu_;
  double prefill_ms_per_token_ ABSL_GUARDED_BY(mu_) = 0.5;  // EMA of measured prefill steps
  double iteration_overhead_ms_ ABSL_GUARDED_BY(mu_) = 0;   // EMA
  double draft_tokens_ ABSL_GUARDED_BY(mu_) = -1;           // EMA; -1 before the first
  double draft_tokens_dev_ ABSL_GUARDED_BY(mu_) = 0;        // EMA of |tokens - draft_tokens_|
  int draft_samples_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace chorus

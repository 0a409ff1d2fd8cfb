// Latency budget arithmetic: a step-time predictor fed with measured steps, and the two
// decisions it drives. Pure (time comes in as arguments), so tests use a fake clock.
#pragma once

#include <map>

#include "absl/base/thread_annotations.h"
#include "chorus/core/mutex.h"

namespace chorus {

// Predicts a forward step's wall time from its row count, from exponential moving averages
// of measured steps bucketed by powers of two, plus two mean absolute deviations, so that a
// step slower than average does not eat the merge reserve. Between two measured shapes it
// interpolates; above the largest it scales linearly; below the smallest it never scales down.
// Thread-safe: the engine thread observes steps while gRPC threads predict in Runtime::Submit
// (issue 11, finding 8).
class StepTimePredictor {
 public:
  // Used until a bucket has a measurement: fixed + per_row x rows.
  StepTimePredictor(double initial_fixed_ms = 2.0, double initial_per_row_ms = 0.5);
  void Observe(int rows, double ms) ABSL_LOCKS_EXCLUDED(mu_);
  // One step of `rows` rows; with `steps` > 1, the time per step of a run of that many steps
  // (the deviation term shrinks as 1/sqrt(steps): a run's slow and fast steps partly cancel).
  double PredictMs(int rows, int steps = 1) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Bucket {
    double ms = 0;
    double dev = 0;  // EMA of |measured - ms|
    double rows = 0;
  };
  const double fixed_ms_, per_row_ms_;
  mutable Mutex mu_;  // core/mutex.h: checked by clang, seen by TSan
  std::map<int, Bucket> buckets_ ABSL_GUARDED_BY(mu_);  // floor(log2(rows)) -> EMA
};

// Stop drafting now when the next step and the merge would end past the deadline.
inline bool ShouldStopDrafting(double now_ms, double deadline_ms, double next_step_ms,
                               double merge_reserve_ms) {
  return now_ms + next_step_ms + merge_reserve_ms > deadline_ms;
}

// A request can start only if its prefill, one decode step and the merge fit in the budget.
inline bool PrefillFits(double now_ms, double deadline_ms, double prefill_ms, double step_ms,
                        double merge_reserve_ms) {
  return now_ms + prefill_ms + step_ms + merge_reserve_ms <= deadline_ms;
}

}  // namespace chorus

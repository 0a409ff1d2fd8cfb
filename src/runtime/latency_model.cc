#include "chorus/runtime/latency_model.h"

namespace chorus {

void LatencyModel::Calibrate(int prefill_tokens, double prefill_ms, double one_row_ms,
                             double eight_rows_ms) {
  {
    MutexLock lock(&mu_);
    prefill_ms_per_token_ = prefill_ms / prefill_tokens;
  }
  steps_.Observe(1, one_row_ms);
  steps_.Observe(8, eight_rows_ms);
}

void LatencyModel::ObserveStep(int rows, int prefill_rows, double ms) {
  if (rows <= 0) return;
  steps_.Observe(rows, ms);
  if (prefill_rows >= 16) {  // mostly prompt rows: a fair per-token prefill sample
    MutexLock lock(&mu_);
    prefill_ms_per_token_ += 0.3 * (ms / rows - prefill_ms_per_token_);
  }
}

void LatencyModel::ObserveIterationOverhead(double ms) {
  MutexLock lock(&mu_);
  iteration_overhead_ms_ += 0.1 * (ms - iteration_overhead_ms_);
}

double LatencyModel::PrefillMs(int prompt_tokens) const {
  MutexLock lock(&mu_);
  return prefill_ms_per_token_ * prompt_tokens;
}

double LatencyModel::IterationOverheadMs() const {
  MutexLock lock(&mu_);
  return iteration_overhead_ms_;
}

}  // namespace chorus

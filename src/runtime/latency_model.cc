#include "chorus/runtime/latency_model.h"

#include <algorithm>
#include <cmath>

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

void LatencyModel::ObserveDraftTokens(int tokens, bool at_least) {
  if (tokens <= 0) return;
  MutexLock lock(&mu_);
  if (at_least && tokens <= draft_tokens_) return;  // a lower bound already met
  ++draft_samples_;
  if (draft_tokens_ < 0) {
    draft_tokens_ = tokens;
    return;
  }
  constexpr double kAlpha = 0.05;  // about the last 20 drafts
  draft_tokens_dev_ += kAlpha * (std::fabs(tokens - draft_tokens_) - draft_tokens_dev_);
  draft_tokens_ += kAlpha * (tokens - draft_tokens_);
}

int LatencyModel::ExpectedDraftTokens(int max_tokens) const {
  MutexLock lock(&mu_);
  if (draft_samples_ < kMinDraftSamples) return max_tokens;
  const double high = std::ceil(draft_tokens_ + 2 * draft_tokens_dev_);
  return static_cast<int>(std::clamp<double>(high, 1, std::max(1, max_tokens)));
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

#include "chorus/agents/budget.h"

#include <algorithm>
#include <cmath>

namespace chorus {

StepTimePredictor::StepTimePredictor(double initial_fixed_ms, double initial_per_row_ms)
    : fixed_ms_(initial_fixed_ms), per_row_ms_(initial_per_row_ms) {}

static int BucketOf(int rows) { return rows <= 1 ? 0 : static_cast<int>(std::log2(rows)); }

void StepTimePredictor::Observe(int rows, double ms) {
  MutexLock lock(&mu_);
  Bucket& b = buckets_[BucketOf(rows)];
  if (b.rows == 0) {
    b.ms = ms;
    b.rows = rows;
  } else {
    constexpr double kAlpha = 0.2;
    b.dev += kAlpha * (std::fabs(ms - b.ms) - b.dev);
    b.ms += kAlpha * (ms - b.ms);
    b.rows += kAlpha * (rows - b.rows);
  }
}

double StepTimePredictor::PredictMs(int rows, int steps) const {
  // Per step: the mean plus two deviations for one step; over a run of `steps` steps, whose
  // deviations partly cancel, two deviations of the run (sqrt(steps) of a step's) per step.
  const double spread = 2.0 / std::sqrt(std::max(1, steps));
  MutexLock lock(&mu_);
  if (buckets_.empty()) return fixed_ms_ + per_row_ms_ * rows;
  const int key = BucketOf(rows);
  auto it = buckets_.upper_bound(key);  // first bucket above
  if (it == buckets_.begin()) {
    return it->second.ms + spread * it->second.dev;  // only larger steps measured: no scaling down
  }
  const Bucket* base = &std::prev(it)->second;  // the bucket itself or the nearest below
  const double at_base = base->ms + spread * base->dev;
  if (rows <= base->rows) return at_base;
  if (it != buckets_.end()) {
    // A larger shape was measured too: interpolate between the two (a step of 2 rows costs
    // about what one of 1 row costs on a small model, not twice), never below the base.
    const Bucket& next = it->second;
    const double at_next = next.ms + spread * next.dev;
    const double f = (rows - base->rows) / std::max(1e-9, next.rows - base->rows);
    return std::max(at_base, at_base + std::min(1.0, f) * (at_next - at_base));
  }
  // Above every measured shape: scale linearly with the rows.
  return at_base * rows / std::max(1.0, base->rows);
}

}  // namespace chorus

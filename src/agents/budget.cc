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

double StepTimePredictor::PredictMs(int rows) const {
  MutexLock lock(&mu_);
  if (buckets_.empty()) return fixed_ms_ + per_row_ms_ * rows;
  const int key = BucketOf(rows);
  auto it = buckets_.upper_bound(key);  // first bucket above
  const Bucket* base;
  if (it != buckets_.begin()) {
    base = &std::prev(it)->second;  // the bucket itself or the nearest below
  } else {
    return it->second.ms + 2 * it->second.dev;  // only larger steps measured: no scaling down
  }
  // Scale linearly above the measured row count, never below its time.
  return (base->ms + 2 * base->dev) * std::max(1.0, rows / std::max(1.0, base->rows));
}

}  // namespace chorus

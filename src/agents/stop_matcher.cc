#include "chorus/agents/stop_matcher.h"

#include <algorithm>

namespace chorus {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const std::string& p : stops_) {
    std::vector<int32_t> f(p.size(), 0);
    int32_t k = 0;
    for (size_t i = 1; i < p.size(); ++i) {
      while (k > 0 && p[i] != p[k]) k = f[k - 1];
      if (p[i] == p[k]) ++k;
      f[i] = k;
    }
    fail_.push_back(std::move(f));
    max_length_ = std::max(max_length_, p.size());
  }
}

size_t StopMatcher::Feed(State& state, std::string_view bytes, size_t base, int64_t* steps) const {
  state.resize(stops_.size(), 0);
  size_t best = std::string::npos;
  int64_t work = 0;
  for (size_t s = 0; s < stops_.size(); ++s) {
    const std::string& p = stops_[s];
    if (p.empty()) continue;
    const std::vector<int32_t>& f = fail_[s];
    int32_t k = state[s];
    for (size_t i = 0; i < bytes.size(); ++i) {
      // Each fallback undoes an earlier advance: at most one per byte fed, amortized.
      while (k > 0 && bytes[i] != p[k]) {
        k = f[k - 1];
        ++work;
      }
      ++work;
      if (bytes[i] == p[k]) ++k;
      if (k == static_cast<int32_t>(p.size())) {  // the first end is this stop's earliest start
        best = std::min(best, base + i + 1 - p.size());
        k = f[k - 1];
        break;
      }
    }
    state[s] = k;
  }
  if (steps != nullptr) *steps += work;
  return best;
}

}  // namespace chorus

#include "chorus/backends/device_plan.h"

#include <algorithm>
#include <limits>

namespace chorus {
namespace {

constexpr int kNeverCapture = std::numeric_limits<int>::min();
constexpr size_t kMaxSeen = 4096;

uint64_t HashWords(const std::vector<uint64_t>& words) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t w : words) {
    h ^= w + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

int64_t RoundUpPow2(int64_t v) {
  int64_t p = 1;
  while (p < v) p <<= 1;
  return p;
}

OpTape::OpTape(GraphDriver* driver, size_t max_graphs) : driver_(driver), max_graphs_(max_graphs) {}

OpTape::~OpTape() { Clear(); }

void OpTape::Push(std::initializer_list<uint64_t> signature, std::function<void()> op) {
  signature_.push_back(signature.size());
  signature_.insert(signature_.end(), signature.begin(), signature.end());
  ops_.push_back(std::move(op));
}

void OpTape::RunEager() {
  for (auto& op : ops_) op();
  ++stats_.eager;
}

OpTape::Outcome OpTape::Flush() {
  if (ops_.empty()) return Outcome::kEmpty;
  Outcome outcome = Outcome::kEager;
  bool done = false;
  if (capturable_ && driver_ != nullptr && max_graphs_ > 0) {
    const uint64_t h = HashWords(signature_);
    auto range = graphs_.equal_range(h);
    auto it = std::find_if(range.first, range.second,
                           [&](const auto& kv) { return kv.second.signature == signature_; });
    if (it != range.second) {
      if (driver_->Launch(it->second.exec)) {
        lru_.splice(lru_.begin(), lru_, it->second.lru);
        ++stats_.replayed;
        outcome = Outcome::kReplayed;
        done = true;
      } else {
        driver_->Destroy(it->second.exec);
        lru_.erase(it->second.lru);
        graphs_.erase(it);
        seen_[h] = kNeverCapture;
      }
    } else {
      if (seen_.size() > kMaxSeen) seen_.clear();
      int& seen = seen_[h];
      if (seen >= 1) {
        void* exec = nullptr;
        if (driver_->BeginCapture()) {
          for (auto& op : ops_) op();
          exec = driver_->EndCapture();
        }
        if (exec != nullptr && driver_->Launch(exec)) {
          lru_.push_front(h);
          graphs_.emplace(h, Graph{signature_, exec, lru_.begin()});
          ++stats_.captured;
          outcome = Outcome::kCaptured;
          done = true;
          while (graphs_.size() > max_graphs_) {
            const uint64_t old = lru_.back();
            auto victims = graphs_.equal_range(old);
            for (auto v = victims.first; v != victims.second; ++v) {
              if (v->second.lru == std::prev(lru_.end())) {
                driver_->Destroy(v->second.exec);
                graphs_.erase(v);
                break;
              }
            }
            lru_.pop_back();
            ++stats_.evicted;
          }
        } else {
          if (exec != nullptr) driver_->Destroy(exec);
          ++stats_.capture_failures;
          seen = kNeverCapture;
        }
      } else if (seen >= 0) {
        ++seen;
      }
    }
  }
  if (!done) RunEager();
  ops_.clear();
  signature_.clear();
  return outcome;
}

void OpTape::Clear() {
  for (auto& [h, g] : graphs_) {
    if (driver_ != nullptr) driver_->Destroy(g.exec);
  }
  graphs_.clear();
  lru_.clear();
  seen_.clear();
}

AttentionPlan PlanQueryTiles(const int32_t* positions, const int32_t* seq_of_token, int num_tokens,
                             int max_tile, int min_tile) {
  AttentionPlan plan;
  int i = 0;
  while (i < num_tokens) {
    int j = i + 1;
    while (j < num_tokens && seq_of_token[j] == seq_of_token[i] &&
           positions[j] == positions[j - 1] + 1)
      ++j;
    // Rows i .. j-1 are one run; cut it into tiles.
    if (j - i >= min_tile) {
      for (int t = i; t < j; t += max_tile) plan.tiles.push_back({t, std::min(max_tile, j - t)});
    } else {
      for (int t = i; t < j; ++t) plan.singles.push_back(t);
    }
    i = j;
  }
  return plan;
}

}  // namespace chorus

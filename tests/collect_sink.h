// Test helper: a ResultSink that keeps the final result and lets the test wait for it.
#pragma once

#include <condition_variable>
#include <mutex>

#include "chorus/core/request.h"

namespace chorus::testing {

class CollectSink : public ResultSink {
 public:
  void OnDelta(int, std::string_view) override {}
  void OnAgentFinished(const DraftResult&) override {}
  void OnComplete(absl::StatusOr<GenerateResult> r) override {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(r);
    done_ = true;
    cv_.notify_all();
  }
  absl::StatusOr<GenerateResult> Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
    return result_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  absl::StatusOr<GenerateResult> result_ = absl::UnknownError("unset");
};

}  // namespace chorus::testing

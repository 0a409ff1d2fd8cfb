// A fixed pool of worker threads for data-parallel kernels (matmul rows, attention heads).
//
// ParallelFor(n, fn) calls fn(begin, end) on disjoint chunks covering [0, n) and returns when all
// chunks are done; the calling thread works too. Not reentrant: one ParallelFor at a time per
// pool (the engine thread is the only caller). Thread-safe to destroy after the last call.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "chorus/core/mutex.h"

namespace chorus {

class ThreadPool {
 public:
  // num_threads counts the caller: 1 means "run inline, start no thread".
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Splits [0, n) into about num_threads contiguous chunks. `cost` estimates the whole job
  // (multiply-adds or similar); below kInlineCost the caller runs it alone, because waking the
  // workers costs more than the job (tiny models ran 40x slower on 2 threads without this).
  static constexpr int64_t kInlineCost = int64_t{1} << 18;
  void ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                   int64_t cost = INT64_MAX);

 private:
  void WorkerLoop(int index);

  const int num_threads_;
  std::vector<std::thread> workers_;
  Mutex mu_;
  CondVar work_cv_;
  CondVar done_cv_;
  // The task is published before generation_ is bumped (release) and read after it is seen
  // (acquire); workers spin briefly on generation_, then sleep on work_cv_.
  const std::function<void(int64_t, int64_t)>* task_ = nullptr;
  int64_t task_n_ = 0;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace chorus

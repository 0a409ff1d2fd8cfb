#include "chorus/core/thread_pool.h"

#include <immintrin.h>

#include <algorithm>

namespace chorus {
namespace {

// Spin this many pause instructions (tens of microseconds) before sleeping: the ops of one
// forward pass follow each other closely, and a condition-variable wake-up costs more than a
// small op.
constexpr int kSpinIterations = 4000;

inline void Pause() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool::ThreadPool(int num_threads) : num_threads_(std::max(1, num_threads)) {
  for (int i = 1; i < num_threads_; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

ThreadPool::~ThreadPool() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  work_cv_.NotifyAll();
  for (auto& t : workers_) t.join();
}

static void RunChunk(const std::function<void(int64_t, int64_t)>& fn, int64_t n, int index,
                     int parts) {
  const int64_t begin = n * index / parts;
  const int64_t end = n * (index + 1) / parts;
  if (begin < end) fn(begin, end);
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t cost) {
  if (n <= 0) return;
  if (num_threads_ == 1 || n == 1 || cost < kInlineCost) {
    fn(0, n);
    return;
  }
  task_ = &fn;
  task_n_ = n;
  pending_.store(num_threads_ - 1, std::memory_order_release);
  {
    MutexLock lock(&mu_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  work_cv_.NotifyAll();
  RunChunk(fn, n, 0, num_threads_);
  for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) > 0; ++i) Pause();
  if (pending_.load(std::memory_order_acquire) > 0) {
    MutexLock lock(&mu_);
    while (pending_.load(std::memory_order_acquire) != 0) done_cv_.Wait(&mu_);
  }
  task_ = nullptr;
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    int spins = 0;
    while (generation_.load(std::memory_order_acquire) == seen && spins < kSpinIterations) {
      Pause();
      ++spins;
    }
    if (generation_.load(std::memory_order_acquire) == seen) {
      MutexLock lock(&mu_);
      while (!stop_ && generation_.load(std::memory_order_acquire) == seen) work_cv_.Wait(&mu_);
      if (stop_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    RunChunk(*task_, task_n_, index, num_threads_);
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      MutexLock lock(&mu_);
      done_cv_.NotifyOne();
    }
  }
}

}  // namespace chorus

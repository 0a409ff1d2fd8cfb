#include "chorus/backends/communicator.h"

#include <cstring>

#include "chorus/backends/backend.h"
#include "chorus/core/mutex.h"

namespace chorus {
namespace {

// Shared state of one CPU group: ranks publish their buffers, every rank sums all of them
// into a private copy, then writes it back once everyone has finished reading.
struct CpuGroup {
  explicit CpuGroup(int world) : world(world), ptrs(world, nullptr) {}
  // False when the group was aborted (before or while waiting).
  bool Barrier() {
    MutexLock lock(&mu);
    if (aborted) return false;
    const uint64_t gen = generation;
    if (++arrived == world) {
      arrived = 0;
      ++generation;
      cv.NotifyAll();
    } else {
      while (generation == gen && !aborted) cv.Wait(&mu);
    }
    return !aborted;
  }
  void Abort() {
    MutexLock lock(&mu);
    aborted = true;
    cv.NotifyAll();
  }
  const int world;
  Mutex mu;
  CondVar cv;
  int arrived ABSL_GUARDED_BY(mu) = 0;
  uint64_t generation ABSL_GUARDED_BY(mu) = 0;
  bool aborted ABSL_GUARDED_BY(mu) = false;
  // Written by each rank for itself between barriers, read by all after the next one (the
  // barrier's lock orders the accesses).
  std::vector<float*> ptrs;
};

absl::Status GroupAborted() {
  return absl::AbortedError("tensor parallel: another rank failed; the group was aborted");
}

class CpuCommunicator : public Communicator {
 public:
  CpuCommunicator(std::shared_ptr<CpuGroup> group, int rank)
      : group_(std::move(group)), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->world; }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    if (group_->world == 1) return absl::OkStatus();
    group_->ptrs[rank_] = data;
    if (!group_->Barrier()) return GroupAborted();
    sum_.assign(count, 0.0f);
    for (int r = 0; r < group_->world; ++r) {  // same order on every rank: identical results
      const float* p = group_->ptrs[r];
      for (int64_t i = 0; i < count; ++i) sum_[i] += p[i];
    }
    if (!group_->Barrier()) return GroupAborted();  // everyone has read every buffer
    std::memcpy(data, sum_.data(), count * sizeof(float));
    return absl::OkStatus();
  }
  void Abort() override { group_->Abort(); }
  bool Aborted() const override {
    MutexLock lock(&group_->mu);
    return group_->aborted;
  }

 private:
  std::shared_ptr<CpuGroup> group_;
  int rank_;
  std::vector<float> sum_;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> CreateCpuCommunicators(int world) {
  auto group = std::make_shared<CpuGroup>(world);
  std::vector<std::unique_ptr<Communicator>> out;
  for (int r = 0; r < world; ++r) out.push_back(std::make_unique<CpuCommunicator>(group, r));
  return out;
}

absl::Status Backend::AllReduceSum(Communicator& comm, float* data, int64_t count) {
  Synchronize();
  if (absl::Status s = TakeError(); !s.ok()) return s;
  return comm.AllReduceSum(data, count);
}

}  // namespace chorus

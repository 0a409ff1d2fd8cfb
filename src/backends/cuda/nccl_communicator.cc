// NCCL communicators for tensor parallelism across the GPUs of one process (one rank per GPU,
// each driven by its own thread). The CUDA backend enqueues the all-reduce on its own stream
// (EnqueueAllReduceSum: in order with its kernels, no host wait, capturable into a graph);
// AllReduceSum is the host-synchronous form for other callers (its own stream, then a wait).
// The ranks share one group: Abort from any rank aborts every rank's communicator, so ranks
// whose kernels wait for a peer that will never arrive return instead of hanging.
#include "chorus/backends/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "chorus/core/mutex.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

// mu orders Abort against every other NCCL call on the group's communicators (an abort from
// one rank's thread never frees a communicator another thread is enqueueing on or destroying);
// it is never held while waiting for the device.
struct NcclGroup {
  Mutex mu;
  std::vector<ncclComm_t> comms ABSL_GUARDED_BY(mu);  // null once aborted or destroyed
  std::vector<int> devices;
  std::atomic<bool> aborted{false};
  void Abort() {
    MutexLock lock(&mu);
    if (aborted.exchange(true)) return;
    int current = 0;
    cudaGetDevice(&current);
    for (size_t i = 0; i < comms.size(); ++i) {
      if (comms[i] == nullptr) continue;  // already destroyed
      cudaSetDevice(devices[i]);
      ncclCommAbort(comms[i]);  // ranks blocked in its collectives return an error
      comms[i] = nullptr;
    }
    cudaSetDevice(current);
  }
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclGroup> group, int rank, cudaStream_t stream)
      : group_(std::move(group)), rank_(rank), stream_(stream) {}
  ~NcclCommunicator() override {
    cudaSetDevice(device());
    ncclComm_t c = nullptr;
    {
      // Taken out under the lock (an abort no longer sees it), destroyed outside it.
      MutexLock lock(&group_->mu);
      std::swap(c, group_->comms[rank_]);
    }
    if (c != nullptr) ncclCommDestroy(c);  // null: an abort already freed it
    cudaStreamDestroy(stream_);
  }
  void Abort() override { group_->Abort(); }
  int rank() const override { return rank_; }
  int world_size() const override { return static_cast<int>(group_->devices.size()); }
  bool EnqueuesOnStream() const override { return true; }
  bool Aborted() const override { return group_->aborted; }
  absl::Status EnqueueAllReduceSum(float* data, int64_t count, void* stream) override {
    ncclResult_t r;
    {
      // Enqueueing does not wait for the peers (the kernel does), so the lock is short.
      MutexLock lock(&group_->mu);
      if (group_->aborted) return AbortedStatus();
      cudaSetDevice(device());
      r = ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat, ncclSum,
                        group_->comms[rank_], static_cast<cudaStream_t>(stream));
    }
    if (r != ncclSuccess)
      return absl::InternalError(StrCat("nccl: all-reduce failed: ", ncclGetErrorString(r)));
    return absl::OkStatus();
  }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    CHORUS_RETURN_IF_ERROR(EnqueueAllReduceSum(data, count, stream_));
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (group_->aborted) return AbortedStatus();
    if (e != cudaSuccess) return absl::InternalError(StrCat("cuda: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }

 private:
  static absl::Status AbortedStatus() {
    return absl::AbortedError("nccl: the tensor-parallel group was aborted");
  }
  int device() const { return group_->devices[rank_]; }

  std::shared_ptr<NcclGroup> group_;
  int rank_;
  cudaStream_t stream_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclCommunicators(
    const std::vector<int>& devices) {
  const int world = static_cast<int>(devices.size());
  if (world < 1) return absl::InvalidArgumentError("nccl: no devices given");
  auto group = std::make_shared<NcclGroup>();
  group->devices = devices;
  std::vector<ncclComm_t> comms(world);
  const ncclResult_t r = ncclCommInitAll(comms.data(), world, devices.data());
  if (r != ncclSuccess) {
    return absl::FailedPreconditionError(
        StrCat("nccl: cannot initialize ", world, " ranks: ", ncclGetErrorString(r)));
  }
  {
    MutexLock lock(&group->mu);
    group->comms = comms;
  }
  std::vector<std::unique_ptr<Communicator>> out;
  for (int i = 0; i < world; ++i) {
    cudaSetDevice(devices[i]);
    cudaStream_t s;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      MutexLock lock(&group->mu);
      for (int j = i; j < world; ++j) {  // no owner yet
        ncclCommDestroy(comms[j]);
        group->comms[j] = nullptr;
      }
      return absl::InternalError("cuda: cannot create a stream for NCCL");
    }
    out.push_back(std::make_unique<NcclCommunicator>(group, i, s));
  }
  return out;
}

}  // namespace chorus

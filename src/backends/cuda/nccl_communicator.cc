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
#include <vector>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

struct NcclGroup {
  std::vector<ncclComm_t> comms;
  std::vector<int> devices;
  std::atomic<bool> aborted{false};
  void Abort() {
    if (aborted.exchange(true)) return;
    for (size_t i = 0; i < comms.size(); ++i) {
      cudaSetDevice(devices[i]);
      ncclCommAbort(comms[i]);  // ranks blocked in its collectives return an error
    }
  }
};

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(std::shared_ptr<NcclGroup> group, int rank, cudaStream_t stream)
      : group_(std::move(group)), rank_(rank), stream_(stream) {}
  ~NcclCommunicator() override {
    cudaSetDevice(device());
    if (!group_->aborted) ncclCommDestroy(comm());  // an abort already freed it
    cudaStreamDestroy(stream_);
  }
  void Abort() override { group_->Abort(); }
  int rank() const override { return rank_; }
  int world_size() const override { return static_cast<int>(group_->comms.size()); }
  bool EnqueuesOnStream() const override { return true; }
  absl::Status EnqueueAllReduceSum(float* data, int64_t count, void* stream) override {
    if (group_->aborted) return Aborted();
    cudaSetDevice(device());
    const ncclResult_t r = ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat, ncclSum,
                                         comm(), static_cast<cudaStream_t>(stream));
    if (group_->aborted) return Aborted();
    if (r != ncclSuccess)
      return absl::InternalError(StrCat("nccl: all-reduce failed: ", ncclGetErrorString(r)));
    return absl::OkStatus();
  }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    CHORUS_RETURN_IF_ERROR(EnqueueAllReduceSum(data, count, stream_));
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (group_->aborted) return Aborted();
    if (e != cudaSuccess) return absl::InternalError(StrCat("cuda: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }

 private:
  static absl::Status Aborted() {
    return absl::AbortedError("nccl: the tensor-parallel group was aborted");
  }
  ncclComm_t comm() const { return group_->comms[rank_]; }
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
  group->comms.resize(world);
  group->devices = devices;
  const ncclResult_t r = ncclCommInitAll(group->comms.data(), world, devices.data());
  if (r != ncclSuccess) {
    return absl::FailedPreconditionError(
        StrCat("nccl: cannot initialize ", world, " ranks: ", ncclGetErrorString(r)));
  }
  std::vector<std::unique_ptr<Communicator>> out;
  for (int i = 0; i < world; ++i) {
    cudaSetDevice(devices[i]);
    cudaStream_t s;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      for (int j = i; j < world; ++j) ncclCommDestroy(group->comms[j]);  // no owner yet
      return absl::InternalError("cuda: cannot create a stream for NCCL");
    }
    out.push_back(std::make_unique<NcclCommunicator>(group, i, s));
  }
  return out;
}

}  // namespace chorus

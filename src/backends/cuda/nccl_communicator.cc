// NCCL communicators for tensor parallelism across the GPUs of one process (one rank per GPU,
// each driven by its own thread). AllReduceSum runs on the rank's own stream and waits for it,
// so it composes with the CUDA backend, which synchronizes its stream before the call.
#include "chorus/backends/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>

#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int device, int rank, int world, cudaStream_t stream)
      : comm_(comm), device_(device), rank_(rank), world_(world), stream_(stream) {}
  ~NcclCommunicator() override {
    if (aborted_) {
      cudaStreamDestroy(stream_);  // ncclCommAbort already freed the communicator
      return;
    }
    ncclCommDestroy(comm_);
    cudaStreamDestroy(stream_);
  }
  void Abort() override {
    if (aborted_.exchange(true)) return;
    cudaSetDevice(device_);
    ncclCommAbort(comm_);  // ranks blocked in this communicator's collectives return an error
  }
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    if (aborted_) return absl::AbortedError("nccl: the tensor-parallel group was aborted");
    cudaSetDevice(device_);
    const ncclResult_t r =
        ncclAllReduce(data, data, static_cast<size_t>(count), ncclFloat, ncclSum, comm_, stream_);
    if (r != ncclSuccess)
      return absl::InternalError(StrCat("nccl: all-reduce failed: ", ncclGetErrorString(r)));
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) return absl::InternalError(StrCat("cuda: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }

 private:
  ncclComm_t comm_;
  std::atomic<bool> aborted_{false};
  int device_, rank_, world_;
  cudaStream_t stream_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclCommunicators(
    const std::vector<int>& devices) {
  const int world = static_cast<int>(devices.size());
  if (world < 1) return absl::InvalidArgumentError("nccl: no devices given");
  std::vector<ncclComm_t> comms(world);
  const ncclResult_t r = ncclCommInitAll(comms.data(), world, devices.data());
  if (r != ncclSuccess) {
    return absl::FailedPreconditionError(
        StrCat("nccl: cannot initialize ", world, " ranks: ", ncclGetErrorString(r)));
  }
  std::vector<std::unique_ptr<Communicator>> out;
  for (int i = 0; i < world; ++i) {
    cudaSetDevice(devices[i]);
    cudaStream_t s;
    if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) {
      return absl::InternalError("cuda: cannot create a stream for NCCL");
    }
    out.push_back(std::make_unique<NcclCommunicator>(comms[i], devices[i], i, world, s));
  }
  return out;
}

}  // namespace chorus

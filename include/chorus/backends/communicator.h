// Collective communication between tensor-parallel ranks. Implementations: CPU (threads as
// ranks, for tests and CPU serving) and NCCL (GPUs; backends/cuda). Each rank uses its own
// Communicator from its own thread; AllReduceSum blocks until every rank has contributed.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"

namespace chorus {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // data[count] (backend memory of this rank) := the elementwise sum over all ranks.
  // ABORTED once any rank of the group called Abort.
  virtual absl::Status AllReduceSum(float* data, int64_t count) = 0;
  // Whether EnqueueAllReduceSum works: the collective can run in order on a device stream (NCCL).
  virtual bool EnqueuesOnStream() const { return false; }
  // True once any rank called Abort: a caller that replays recorded collectives (CUDA graphs)
  // must stop before launching them on a freed communicator.
  virtual bool Aborted() const { return false; }
  // The same sum enqueued on `stream` (a cudaStream_t of this rank's device) after the work
  // already there, without waiting for it: a forward then needs no host synchronization per
  // all-reduce, and a captured CUDA graph can hold the collective. Failures of the collective
  // itself surface in the stream (or as ABORTED after Abort). UNIMPLEMENTED unless
  // EnqueuesOnStream().
  virtual absl::Status EnqueueAllReduceSum(float* data, int64_t count, void* stream) {
    return absl::UnimplementedError("this communicator reduces on the host only");
  }
  // Called by a rank that failed and will not reach its next all-reduce: every rank blocked in
  // (or later entering) AllReduceSum returns ABORTED instead of waiting forever. The group is
  // unusable afterwards (NCCL: ncclCommAbort of every rank's communicator).
  virtual void Abort() = 0;
};

// `world` communicators over host memory that reduce among themselves.
std::vector<std::unique_ptr<Communicator>> CreateCpuCommunicators(int world);

}  // namespace chorus

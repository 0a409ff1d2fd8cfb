// The CUDA backend (built when CHORUS_CUDA finds nvcc): weights and KV cache in device memory,
// kernels from kernels/, cuBLAS GEMMs for prefill, the dequantize-and-dot GEMV for decode
// batches of up to 8 rows. One stream; not thread-safe (the engine thread drives it).
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/model/communicator.h"

#include <vector>

namespace chorus {

// Devices usable by this process: 0 without a driver or a GPU (never an error).
int CudaDeviceCount();
// FAILED_PRECONDITION when the build has no CUDA or the device does not exist.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device);
// "cpu" or "cuda" (device 0).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name, int cpu_threads);

// Tensor-parallel ranks: one backend per rank and matching communicators. cpu: `ranks`
// backends sharing cpu_threads, CPU communicators; cuda: one backend per device, NCCL.
struct BackendSet {
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Communicator>> comms;
};
absl::StatusOr<BackendSet> CreateTensorParallelBackends(std::string_view name, int ranks,
                                                        const std::vector<int>& cuda_devices,
                                                        int cpu_threads);

}  // namespace chorus

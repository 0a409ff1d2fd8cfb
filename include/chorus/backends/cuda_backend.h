// The CUDA backend (built when CHORUS_CUDA finds nvcc): weights and KV cache in device memory,
// kernels from kernels/, cuBLAS GEMMs for prefill and batches over 8 rows, the
// dequantize-and-dot GEMV for decode batches of up to 8 rows, tiled attention for prefill runs
// and split (flash-decoding) attention for decode rows. Ops are deferred on an OpTape
// (device_plan.h) until results are needed; decode forwards of up to 64 rows whose ops and
// arguments repeat are captured once as a CUDA graph and replayed. One stream; not thread-safe
// (the engine thread drives it).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/backends/communicator.h"

namespace chorus {

struct CudaBackendOptions {
  bool graphs = true;         // capture and replay decode steps (env CHORUS_CUDA_GRAPHS=0: off)
  bool dequant_cache = true;  // keep half copies of quantized weights for GEMMs while device
                              // memory allows (env CHORUS_CUDA_DEQUANT_CACHE=0: off)
  bool kv_f16 = true;         // K/V cache in half precision (env CHORUS_CUDA_KV_F16=0: F32)
  bool fuse = true;    // fewer launches: decode GEMVs sharing their input (Q/K/V, gate/up) as
                       // one group, RoPE of Q and K together, the residual add inside the next
                       // RMSNorm (env CHORUS_CUDA_FUSE=0: every op its own launch)
  bool repack = true;  // Q8_0 / Q4_0 weights regrouped at load so the decode GEMV reads 16
                       // aligned bytes per load (kernels.h kQ8_0R; env CHORUS_CUDA_REPACK=0:
                       // ggml's 34 / 18-byte blocks, read 2 bytes at a time)
  static CudaBackendOptions FromEnvironment();
};

// What the graph machinery did so far (all zero for other backends).
struct CudaGraphStats {
  int64_t eager = 0, captured = 0, replayed = 0, capture_failures = 0, graphs = 0;
  int64_t dequantized_bytes = 0;
};
CudaGraphStats GetCudaGraphStats(const Backend& backend);

// Devices usable by this process: 0 without a driver or a GPU (never an error).
int CudaDeviceCount();
// Why there is no device: "" when CudaDeviceCount() > 0; "no CUDA device", "no CUDA driver ...",
// or the runtime's own error for anything else (a driver error is not "0 devices").
std::string CudaDeviceStatus();
// FAILED_PRECONDITION when the build has no CUDA or the device does not exist.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(
    int device);  // options from the environment
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device,
                                                           const CudaBackendOptions& options);
// "cpu" or "cuda" (device 0).
absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name, int cpu_threads);

// Tensor-parallel ranks: one backend per rank and matching communicators. cpu: `ranks`
// backends sharing cpu_threads, CPU communicators; cuda: one backend per device, NCCL.
struct BackendSet {
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Communicator>> comms;
};
absl::StatusOr<BackendSet> CreateTensorParallelBackends(
    std::string_view name, int ranks, const std::vector<int>& cuda_devices, int cpu_threads,
    const CudaBackendOptions& cuda_options = CudaBackendOptions::FromEnvironment());

}  // namespace chorus

// Backend selection by name; the CUDA entry points exist in every build and report
// FAILED_PRECONDITION when CUDA was not compiled in.
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#ifdef CHORUS_HAVE_NCCL
#include "chorus/backends/nccl_communicator.h"
#endif

namespace chorus {

#ifndef CHORUS_HAVE_CUDA
int CudaDeviceCount() { return 0; }
std::string CudaDeviceStatus() { return "this build has no CUDA backend"; }
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device, const CudaBackendOptions&) {
  return absl::FailedPreconditionError(
      "this build has no CUDA backend (configure with CHORUS_CUDA=ON)");
}
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  return CreateCudaBackend(device, CudaBackendOptions{});
}
CudaBackendOptions CudaBackendOptions::FromEnvironment() { return {}; }
CudaGraphStats GetCudaGraphStats(const Backend&) { return {}; }
#endif

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name, int cpu_threads) {
  if (name == "cpu") return CreateCpuBackend(cpu_threads);
  if (name == "cuda") return CreateCudaBackend(0);
  return absl::InvalidArgumentError(StrCat("backend '", name, "' is not cpu or cuda"));
}

absl::StatusOr<BackendSet> CreateTensorParallelBackends(std::string_view name, int ranks,
                                                        const std::vector<int>& cuda_devices,
                                                        int cpu_threads,
                                                        const CudaBackendOptions& cuda_options) {
  BackendSet set;
  if (name == "cpu") {
    for (int r = 0; r < ranks; ++r)
      set.backends.push_back(CreateCpuBackend(std::max(1, cpu_threads / ranks)));
    set.comms = CreateCpuCommunicators(ranks);
    return set;
  }
  if (name != "cuda")
    return absl::InvalidArgumentError(StrCat("backend '", name, "' is not cpu or cuda"));
  std::vector<int> devices = cuda_devices;
  if (devices.empty()) {
    for (int r = 0; r < ranks; ++r) devices.push_back(r);
  }
  for (int d : devices) {
    CHORUS_ASSIGN_OR_RETURN(auto b, CreateCudaBackend(d, cuda_options));
    set.backends.push_back(std::move(b));
  }
#ifdef CHORUS_HAVE_NCCL
  CHORUS_ASSIGN_OR_RETURN(set.comms, CreateNcclCommunicators(devices));
  return set;
#else
  return absl::FailedPreconditionError("tensor parallelism on cuda needs a build with NCCL");
#endif
}

}  // namespace chorus

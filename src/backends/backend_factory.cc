// Backend selection by name; the CUDA entry points exist in every build and report
// FAILED_PRECONDITION when CUDA was not compiled in.
#include "chorus/backends/cpu_backend.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/core/str_cat.h"

namespace chorus {

#ifndef CHORUS_HAVE_CUDA
int CudaDeviceCount() { return 0; }
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  return absl::FailedPreconditionError("this build has no CUDA backend (configure with CHORUS_CUDA=ON)");
}
#endif

absl::StatusOr<std::unique_ptr<Backend>> CreateBackend(std::string_view name, int cpu_threads) {
  if (name == "cpu") return CreateCpuBackend(cpu_threads);
  if (name == "cuda") return CreateCudaBackend(0);
  return absl::InvalidArgumentError(StrCat("backend '", name, "' is not cpu or cuda"));
}

}  // namespace chorus

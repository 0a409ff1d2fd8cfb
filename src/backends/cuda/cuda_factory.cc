// The CUDA backend's entry points (include/chorus/backends/cuda_backend.h): device discovery,
// options from the environment, construction, graph statistics.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "chorus/backends/cuda_backend.h"
#include "chorus/core/str_cat.h"
#include "cuda_backend_internal.h"

namespace chorus {
namespace {

constexpr size_t kBlasWorkspace = size_t{32} << 20;

}  // namespace

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver, no device or a driver error: none usable (see below)
    return 0;
  }
  return n;
}

std::string CudaDeviceStatus() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e == cudaSuccess && n > 0) return "";
  cudaGetLastError();
  if (e == cudaSuccess || e == cudaErrorNoDevice) return "no CUDA device";
  if (e == cudaErrorInsufficientDriver) return "no CUDA driver, or one older than the runtime";
  return StrCat("CUDA driver error ", static_cast<int>(e), ": ", cudaGetErrorString(e));
}

CudaBackendOptions CudaBackendOptions::FromEnvironment() {
  CudaBackendOptions o;
  auto off = [](const char* name) {
    const char* v = std::getenv(name);
    return v != nullptr && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0);
  };
  o.graphs = !off("CHORUS_CUDA_GRAPHS");
  o.dequant_cache = !off("CHORUS_CUDA_DEQUANT_CACHE");
  o.kv_f16 = !off("CHORUS_CUDA_KV_F16");
  o.fuse = !off("CHORUS_CUDA_FUSE");
  o.repack = !off("CHORUS_CUDA_REPACK");
  return o;
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device) {
  return CreateCudaBackend(device, CudaBackendOptions::FromEnvironment());
}

absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend(int device,
                                                           const CudaBackendOptions& options) {
  const int count = CudaDeviceCount();
  if (device < 0 || device >= count) {
    const std::string why = CudaDeviceStatus();
    return absl::FailedPreconditionError(StrCat("cuda: device ", device, " not available (", count,
                                                " devices", why.empty() ? "" : "; ", why, ")"));
  }
  if (cudaSetDevice(device) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError("cuda: cudaSetDevice failed");
  }
  cudaStream_t stream;
  if (cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    cudaGetLastError();
    return absl::InternalError("cuda: cannot create a stream");
  }
  cublasHandle_t blas;
  if (cublasCreate(&blas) != CUBLAS_STATUS_SUCCESS) {
    cudaStreamDestroy(stream);
    return absl::InternalError("cublas: cannot create a handle");
  }
  // A workspace of our own, so that cuBLAS never allocates while a graph is being captured.
  void* workspace = nullptr;
  if (cudaMalloc(&workspace, kBlasWorkspace) != cudaSuccess) {
    cudaGetLastError();
    cublasDestroy(blas);
    cudaStreamDestroy(stream);
    return absl::ResourceExhaustedError("cuda: out of device memory for the cuBLAS workspace");
  }
  cublasSetStream(blas, stream);
  cublasSetWorkspace(blas, workspace, kBlasWorkspace);
  cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH);  // no TF32: F32 weights stay F32
  return std::unique_ptr<Backend>(
      new cuda_internal::CudaBackend(device, stream, blas, workspace, options));
}

CudaGraphStats GetCudaGraphStats(const Backend& backend) {
  if (backend.name() != "cuda") return {};
  return static_cast<const cuda_internal::CudaBackend&>(backend).graph_stats();
}

}  // namespace chorus

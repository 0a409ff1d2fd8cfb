// The CUDA runtime and cuBLAS calls the CUDA backend makes, emulated on the host for
// tests/cuda_emu (device memory is host memory, streams run in order at once, stream capture
// records launches and copies into a graph that a graph launch replays, GemmEx is a plain loop).
// Calls that a real capture forbids (synchronous copies, stream synchronization) fail while
// capturing, as they would invalidate a real capture.
#pragma once

#include "emu.h"

using cudaGraph_t = emu::GraphData*;
using cudaGraphExec_t = emu::GraphData*;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaStreamCaptureMode { cudaStreamCaptureModeThreadLocal };
constexpr unsigned cudaStreamNonBlocking = 1;
constexpr int cudaErrorMemoryAllocation = 2;
constexpr int cudaErrorInsufficientDriver = 35;
constexpr int cudaErrorNoDevice = 100;
constexpr int cudaErrorInvalidDevice = 101;
constexpr int cudaErrorStreamCaptureUnsupported = 900;

inline cudaError_t cudaMalloc(void** p, size_t n) {
  // A real capture is invalidated by an allocation (cudaMalloc is not stream ordered).
  if (emu::Capturing()) return cudaErrorStreamCaptureUnsupported;
  const size_t bytes = (n + 255) / 256 * 256;
  *p = std::aligned_alloc(256, bytes == 0 ? 256 : bytes);
  if (*p == nullptr) return cudaErrorMemoryAllocation;
  std::memset(*p, 0xCD, bytes);  // garbage, as fresh device memory is
  return cudaSuccess;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  if (emu::Capturing()) return cudaErrorStreamCaptureUnsupported;
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  if (emu::Capturing()) {
    emu::CaptureGraph()->ops.push_back([=] { std::memcpy(d, s, n); });
    return cudaSuccess;
  }
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) {
  return emu::Capturing() ? cudaErrorStreamCaptureUnsupported : cudaSuccess;
}
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static char stream;
  *s = &stream;
  return cudaSuccess;
}
inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
// Two devices, so that tensor parallelism runs too (all memory is host memory).
inline cudaError_t cudaSetDevice(int d) { return d >= 0 && d < 2 ? cudaSuccess : cudaErrorInvalidDevice; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
// A small device (4 SMs), so that launchers that size their grids from the SM count (the GEMV's
// split over columns) take those paths at the emulator tests' small shapes.
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int) {
  *v = a == cudaDevAttrMultiProcessorCount ? 4 : 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 2;
  return cudaSuccess;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  static char text[48];
  std::snprintf(text, sizeof(text), "emulated CUDA error %d", e);
  return text;
}
inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = size_t{8} << 30;
  *total_bytes = size_t{16} << 30;
  return cudaSuccess;
}
inline cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
  if (emu::Capturing()) return cudaErrorStreamCaptureUnsupported;
  emu::Capturing() = true;
  emu::CaptureGraph() = new emu::GraphData;
  return cudaSuccess;
}
inline cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* g) {
  emu::Capturing() = false;
  *g = emu::CaptureGraph();
  emu::CaptureGraph() = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaGraphInstantiate(cudaGraphExec_t* e, cudaGraph_t g, unsigned long long) {
  *e = new emu::GraphData(*g);
  return cudaSuccess;
}
inline cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
  for (auto& op : e->ops) op();
  return cudaSuccess;
}
inline cudaError_t cudaGraphDestroy(cudaGraph_t g) {
  delete g;
  return cudaSuccess;
}
inline cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) {
  delete e;
  return cudaSuccess;
}

// cuBLAS
using cublasHandle_t = void*;
enum cublasStatus_t { CUBLAS_STATUS_SUCCESS = 0, CUBLAS_STATUS_NOT_SUPPORTED = 15 };
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cudaDataType { CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
enum cublasMath_t { CUBLAS_DEFAULT_MATH };
inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
  static char handle;
  *h = &handle;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t) { return CUBLAS_STATUS_SUCCESS; }
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t, void*, size_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline float EmuLoad(const void* p, cudaDataType t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return t == CUDA_R_16F ? EmuHalfToFloat(h) : __uint_as_float(static_cast<uint32_t>(h) << 16);
}
// Column-major C[m, n] = alpha * op(A) op(B) + beta * C for the one form the backend uses: A
// transposed (k x m, lda), B as is (k x n, ldb), F32 output.
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb,
                                   int m, int n, int k, const void* alpha, const void* A,
                                   cudaDataType at, int lda, const void* B, cudaDataType bt,
                                   int ldb, const void* beta, void* C, cudaDataType ct, int ldc,
                                   cublasComputeType_t, cublasGemmAlgo_t) {
  if (ta != CUBLAS_OP_T || tb != CUBLAS_OP_N || ct != CUDA_R_32F)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  auto run = [=] {
    float* c = static_cast<float*>(C);
    for (int j = 0; j < n; ++j) {
      for (int i = 0; i < m; ++i) {
        double s = 0;
        for (int p = 0; p < k; ++p) {
          s += static_cast<double>(EmuLoad(A, at, static_cast<size_t>(i) * lda + p)) *
               EmuLoad(B, bt, static_cast<size_t>(j) * ldb + p);
        }
        float& out = c[static_cast<size_t>(j) * ldc + i];
        out = al * static_cast<float>(s) + (be == 0.0f ? 0.0f : be * out);
      }
    }
  };
  if (emu::Capturing()) {
    emu::CaptureGraph()->ops.push_back(run);
  } else {
    run();
  }
  return CUBLAS_STATUS_SUCCESS;
}

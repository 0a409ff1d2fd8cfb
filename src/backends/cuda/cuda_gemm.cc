// The CUDA backend's GEMMs (prefill and batches over the GEMV's rows) with cuBLAS, and the cache
// of half-precision copies of quantized weights they read.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "cuda_backend_internal.h"
#include "kernels.h"

namespace chorus::cuda_internal {
namespace {

bool Quantized(GgmlType t) {
  return t != GgmlType::kF32 && t != GgmlType::kF16 && t != GgmlType::kBF16;
}

}  // namespace

const void* CudaBackend::Dequantized(const WeightTensor& w) {
  auto it = dequantized_.find(w.data);
  if (it != dequantized_.end()) return it->second;
  if (!options_.dequant_cache) return nullptr;
  Use();
  const size_t bytes = static_cast<size_t>(w.rows) * w.cols * 2;
  if (dequant_budget_ < 0) {
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
      cudaGetLastError();
      dequant_budget_ = 0;
    } else {
      const size_t reserve = std::max<size_t>(size_t{1} << 30, total / 10);
      dequant_budget_ = free > reserve ? static_cast<int64_t>(free - reserve) : 0;
    }
  }
  if (dequantized_bytes_ + static_cast<int64_t>(bytes) > dequant_budget_) return nullptr;
  void* p = nullptr;
  if (cudaMalloc(&p, bytes) != cudaSuccess) {
    cudaGetLastError();
    dequant_budget_ = 0;
    return nullptr;
  }
  // Launched now, outside any capture: it reads only the weight and writes fresh memory, so
  // running ahead of the pending ops is safe.
  if (!Check(k::DequantizeToHalf(Dev(w), p, stream_))) {
    cudaFree(p);
    return nullptr;
  }
  dequantized_.emplace(w.data, p);
  dequantized_bytes_ += static_cast<int64_t>(bytes);
  return p;
}

void CudaBackend::Gemm(const WeightTensor& w, const float* x, int n, float* out) {
  const int m = static_cast<int>(w.rows), kk = static_cast<int>(w.cols);
  if (w.type == GgmlType::kF32) {
    const void* a = w.data;
    PushOp({kOpGemm, W(a), W(x), W(n), W(out), W(m), W(kk)}, [=, this] {
      const float one = 1.0f, zero = 0.0f;
      Check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, a, CUDA_R_32F, kk, x,
                         CUDA_R_32F, kk, &zero, out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
    });
    return;
  }
  const bool bf16 = w.type == GgmlType::kBF16;
  const void* a = w.data;
  void* deq = nullptr;
  if (Quantized(w.type)) {
    a = Dequantized(w);
    if (a == nullptr) {
      if (!Grow(deq_, static_cast<size_t>(m) * kk * 2)) return;
      deq = deq_.p;
      a = deq;
    }
  }
  if (!Grow(act_, static_cast<size_t>(n) * kk * 2)) return;
  void* act = act_.p;
  const k::DeviceWeight dw = Dev(w);
  PushOp({kOpGemm, W(dw.data), W(a), W(deq), W(x), W(n), W(out), W(act), W(m), W(kk)}, [=, this] {
    const int64_t count = static_cast<int64_t>(n) * kk;
    Check(bf16 ? k::FloatToBf16(x, count, act, stream_) : k::FloatToHalf(x, count, act, stream_));
    if (deq != nullptr) Check(k::DequantizeToHalf(dw, deq, stream_));
    const cudaDataType t = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    const float one = 1.0f, zero = 0.0f;
    Check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, m, n, kk, &one, a, t, kk, act, t, kk, &zero,
                       out, CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  });
}

}  // namespace chorus::cuda_internal

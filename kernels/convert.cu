// Weight and activation conversions: the load-time regrouping of Q4_0 / Q8_0 for the GEMV's
// 16-byte loads (RepackForGemv; layout in kernels.h), and what feeds cuBLAS for prefill
// (quantized weights to half, activations to half / bfloat16).
#include "common.cuh"

namespace chorus::kernels {
namespace {

// Regroups one 256-value group of a ggml Q4_0 / Q8_0 row in place: the 8 scales to the front,
// then the 8 blocks' quants (each group keeps its bytes, so threads never overlap).
template <int kType>
__global__ void RepackKernel(DeviceWeight w, int64_t groups_per_row) {
  constexpr int kBytes = kType == kQ8_0 ? 34 : 18, kQuants = kBytes - 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= w.rows * groups_per_row) return;
  uint8_t* g = static_cast<uint8_t*>(const_cast<void*>(w.data)) +
               (idx / groups_per_row) * w.row_bytes + (idx % groups_per_row) * 8 * kBytes;
  uint8_t tmp[8 * kBytes];
  for (int i = 0; i < 8 * kBytes; ++i) tmp[i] = g[i];
  for (int b = 0; b < 8; ++b) {
    g[2 * b] = tmp[b * kBytes];
    g[2 * b + 1] = tmp[b * kBytes + 1];
    for (int i = 0; i < kQuants; ++i) g[16 + b * kQuants + i] = tmp[b * kBytes + 2 + i];
  }
}

__global__ void DequantizeToHalfKernel(DeviceWeight w, __half* dst) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= w.rows * w.cols) return;
  const int64_t r = idx / w.cols, j = idx % w.cols;
  dst[idx] =
      __float2half(WeightAt(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes, j));
}

__global__ void ToHalfKernel(const float* x, int64_t n, __half* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2half(x[i]);
}

__global__ void ToBf16Kernel(const float* x, int64_t n, __nv_bfloat16* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(x[i]);
}

}  // namespace

cudaError_t RepackForGemv(const DeviceWeight& w, cudaStream_t s) {
  if (!w.data || RepackedType(w.type, w.cols) < 0 ||
      w.row_bytes != w.cols / 32 * BlockBytes(w.type)) {
    return cudaErrorInvalidValue;
  }
  const int64_t groups = w.cols / 256, total = w.rows * groups;
  if (total <= 0) return cudaSuccess;
  if (w.type == kQ8_0) {
    RepackKernel<kQ8_0><<<Blocks(total), kThreads, 0, s>>>(w, groups);
  } else {
    RepackKernel<kQ4_0><<<Blocks(total), kThreads, 0, s>>>(w, groups);
  }
  return Launched();
}

cudaError_t DequantizeToHalf(const DeviceWeight& w, void* dst, cudaStream_t s) {
  if (!w.data || !dst || BlockBytes(w.type) <= 0) return cudaErrorInvalidValue;
  DequantizeToHalfKernel<<<Blocks(w.rows * w.cols), kThreads, 0, s>>>(w, static_cast<__half*>(dst));
  return Launched();
}

cudaError_t FloatToHalf(const float* x, int64_t count, void* dst, cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  if (!x || !dst) return cudaErrorInvalidValue;
  ToHalfKernel<<<Blocks(count), kThreads, 0, s>>>(x, count, static_cast<__half*>(dst));
  return Launched();
}

cudaError_t FloatToBf16(const float* x, int64_t count, void* dst, cudaStream_t s) {
  if (count <= 0) return cudaSuccess;
  if (!x || !dst) return cudaErrorInvalidValue;
  ToBf16Kernel<<<Blocks(count), kThreads, 0, s>>>(x, count, static_cast<__nv_bfloat16*>(dst));
  return Launched();
}

}  // namespace chorus::kernels

// Decode matmul: one warp per weight row, dequantizing on the fly and dotting with up to
// kMaxGemvTokens activation rows, so the weights are read once for the whole decode batch.
// Also the converters that feed cuBLAS for prefill (weights to half, activations to half/bf16).
#include "common.cuh"

namespace chorus::kernels {
namespace {

constexpr int kRowsPerBlock = kThreads / 32;

__global__ void GemvKernel(DeviceWeight w, const float* x, int n, float* out) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp;
  if (r >= w.rows) return;
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.row_bytes;
  const int64_t cols = w.cols;
  float acc[kMaxGemvTokens];
#pragma unroll
  for (int t = 0; t < kMaxGemvTokens; ++t) acc[t] = 0.0f;
  if (w.type == kQ8_0 || w.type == kQ4_0) {
    const int64_t blocks = cols / 32;
    const int bytes = w.type == kQ8_0 ? 34 : 18;
    for (int64_t b = lane; b < blocks; b += 32) {
      const uint8_t* blk = row + b * bytes;
      const float d = HalfBits(Load16(blk));
      for (int i = 0; i < 32; ++i) {
        float q;
        if (w.type == kQ8_0) {
          q = static_cast<float>(static_cast<int8_t>(blk[2 + i]));
        } else {
          const uint8_t v = blk[2 + (i & 15)];
          q = static_cast<float>((i < 16 ? (v & 0xf) : (v >> 4)) - 8);
        }
        const float wv = d * q;
        const int64_t j = b * 32 + i;
#pragma unroll
        for (int t = 0; t < kMaxGemvTokens; ++t) {
          if (t < n) acc[t] += wv * x[t * cols + j];
        }
      }
    }
  } else {
    for (int64_t j = lane; j < cols; j += 32) {
      const float wv = w.type == kF32 ? reinterpret_cast<const float*>(row)[j]
                                      : (w.type == kF16 ? HalfBits(Load16(row + 2 * j)) : Bf16Bits(Load16(row + 2 * j)));
#pragma unroll
      for (int t = 0; t < kMaxGemvTokens; ++t) {
        if (t < n) acc[t] += wv * x[t * cols + j];
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxGemvTokens; ++t) {
    if (t < n) {
      const float v = WarpSum(acc[t]);
      if (lane == 0) out[t * w.rows + r] = v;
    }
  }
}

__global__ void DequantizeToHalfKernel(DeviceWeight w, __half* dst) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= w.rows * w.cols) return;
  const int64_t r = idx / w.cols, j = idx % w.cols;
  dst[idx] = __float2half(WeightAt(w.type, static_cast<const uint8_t*>(w.data) + r * w.row_bytes, j));
}

__global__ void ToHalfKernel(const float* x, int64_t n, __half* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2half(x[i]);
}

__global__ void ToBf16Kernel(const float* x, int64_t n, __nv_bfloat16* y) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) y[i] = __float2bfloat16(x[i]);
}

bool KnownType(int t) { return t == kF32 || t == kF16 || t == kBF16 || t == kQ8_0 || t == kQ4_0; }

}  // namespace

cudaError_t Gemv(const DeviceWeight& w, const float* x, int n, float* out, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!w.data || !x || !out || n > kMaxGemvTokens || !KnownType(w.type)) return cudaErrorInvalidValue;
  if ((w.type == kQ8_0 || w.type == kQ4_0) && w.cols % 32 != 0) return cudaErrorInvalidValue;
  GemvKernel<<<Blocks(w.rows, kRowsPerBlock), kThreads, 0, s>>>(w, x, n, out);
  return Launched();
}

cudaError_t DequantizeToHalf(const DeviceWeight& w, void* dst, cudaStream_t s) {
  if (!w.data || !dst || !KnownType(w.type)) return cudaErrorInvalidValue;
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

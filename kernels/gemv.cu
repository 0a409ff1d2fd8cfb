// Decode matmul: one warp per weight row, dequantizing on the fly (vector loads) and dotting with
// up to kMaxGemvTokens activation rows, so the weights are read once for the whole decode batch.
// Also the converters that feed cuBLAS for prefill (weights to half, activations to half/bf16).
#include "common.cuh"

namespace chorus::kernels {
namespace {

constexpr int kRowsPerBlock = kThreads / 32;

// acc[t] += sum_i w[i] * x[t, j0 + i] for kW consecutive weights (x rows 16-byte aligned at j0).
template <int kW>
__device__ __forceinline__ void DotRows(const float (&w)[kW], const float* x, int64_t cols,
                                        int64_t j0, int n, float (&acc)[kMaxGemvTokens]) {
#pragma unroll
  for (int t = 0; t < kMaxGemvTokens; ++t) {
    if (t >= n) break;
    const float4* xv = reinterpret_cast<const float4*>(x + t * cols + j0);
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kW / 4; ++i) {
      const float4 v = xv[i];
      s += w[4 * i] * v.x + w[4 * i + 1] * v.y + w[4 * i + 2] * v.z + w[4 * i + 3] * v.w;
    }
    acc[t] += s;
  }
}

// One warp per weight row. Vectorized layouts (the launcher checks alignment): Q8_0 / Q4_0 one
// 32-value block per lane and step (16-bit loads: blocks are 34 / 18 bytes); F16 / BF16 eight
// values per lane and step (16-byte loads); F32 four. kScalar: any layout, one value at a time.
// A group of weights sharing the input: block ranges [first_block[i], first_block[i + 1]) belong
// to weight i.
struct GemvGroupArgs {
  DeviceWeight w[kMaxGemvGroup];
  float* out[kMaxGemvGroup];
  int first_block[kMaxGemvGroup + 1];
};

template <int kType, bool kScalar>
__global__ void GemvKernel(GemvGroupArgs g, const float* x, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int which = 0;
#pragma unroll
  for (int i = 1; i < kMaxGemvGroup; ++i) which += static_cast<int>(blockIdx.x) >= g.first_block[i];
  const DeviceWeight& w = g.w[which];
  float* out = g.out[which];
  const int64_t r = static_cast<int64_t>(blockIdx.x - g.first_block[which]) * kRowsPerBlock + warp;
  if (r >= w.rows) return;
  const uint8_t* row = static_cast<const uint8_t*>(w.data) + r * w.row_bytes;
  const int64_t cols = w.cols;
  float acc[kMaxGemvTokens];
#pragma unroll
  for (int t = 0; t < kMaxGemvTokens; ++t) acc[t] = 0.0f;
  if constexpr (kScalar) {
    for (int64_t j = lane; j < cols; j += 32) {
      const float wv = WeightAt(kType, row, j);
#pragma unroll
      for (int t = 0; t < kMaxGemvTokens; ++t) {
        if (t < n) acc[t] += wv * x[t * cols + j];
      }
    }
  } else if constexpr (kType == kQ8_0 || kType == kQ4_0) {
    constexpr int kBytes = kType == kQ8_0 ? 34 : 18;
    const int64_t blocks = cols / 32;
    for (int64_t b = lane; b < blocks; b += 32) {
      const uint16_t* blk = reinterpret_cast<const uint16_t*>(row + b * kBytes);
      const float d = HalfBits(blk[0]);
      float wv[32];
      if constexpr (kType == kQ8_0) {
#pragma unroll
        for (int i = 0; i < 16; ++i) {
          const uint16_t u = blk[1 + i];
          wv[2 * i] = d * static_cast<float>(static_cast<int8_t>(u & 0xff));
          wv[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(u >> 8));
        }
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const uint16_t u = blk[1 + i];  // bytes 2i (low) and 2i + 1 (high)
          wv[2 * i] = d * static_cast<float>(static_cast<int>(u & 0xf) - 8);
          wv[2 * i + 1] = d * static_cast<float>(static_cast<int>((u >> 8) & 0xf) - 8);
          wv[16 + 2 * i] = d * static_cast<float>(static_cast<int>((u >> 4) & 0xf) - 8);
          wv[16 + 2 * i + 1] = d * static_cast<float>(static_cast<int>(u >> 12) - 8);
        }
      }
      DotRows<32>(wv, x, cols, b * 32, n, acc);
    }
  } else if constexpr (kType == kF16 || kType == kBF16) {
    for (int64_t j0 = 8 * lane; j0 < cols; j0 += 8 * 32) {
      const uint4 raw = *reinterpret_cast<const uint4*>(row + 2 * j0);
      const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
      float wv[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const uint16_t lo = static_cast<uint16_t>(words[i] & 0xffff),
                       hi = static_cast<uint16_t>(words[i] >> 16);
        wv[2 * i] = kType == kF16 ? HalfBits(lo) : Bf16Bits(lo);
        wv[2 * i + 1] = kType == kF16 ? HalfBits(hi) : Bf16Bits(hi);
      }
      DotRows<8>(wv, x, cols, j0, n, acc);
    }
  } else {
    for (int64_t j0 = 4 * lane; j0 < cols; j0 += 4 * 32) {
      const float4 v = *reinterpret_cast<const float4*>(row + 4 * j0);
      const float wv[4] = {v.x, v.y, v.z, v.w};
      DotRows<4>(wv, x, cols, j0, n, acc);
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

template <int kType>
cudaError_t LaunchGemv(const DeviceWeight* w, float* const* out, int count, const float* x, int n,
                       cudaStream_t s) {
  // Vector loads need aligned rows: every row start and every x row at a 16-byte boundary (for
  // the quantized types, 2-byte block fields and 16-byte x rows).
  const int64_t vec = kType == kF32 ? 4 : (kType == kF16 || kType == kBF16) ? 8 : 32;
  bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  GemvGroupArgs g{};
  int64_t blocks = 0;
  for (int i = 0; i < kMaxGemvGroup; ++i) {
    const int k = i < count ? i : count - 1;  // unused slots repeat the last weight, no blocks
    g.w[i] = w[k];
    g.out[i] = out[k];
    g.first_block[i] = static_cast<int>(blocks);
    if (i < count) blocks += Blocks(w[i].rows, kRowsPerBlock);
    aligned =
        aligned && w[k].cols % vec == 0 && w[k].cols % 4 == 0 &&
        reinterpret_cast<uintptr_t>(w[k].data) % 16 == 0 &&
        ((kType == kQ8_0 || kType == kQ4_0) ? w[k].row_bytes % 2 == 0 : w[k].row_bytes % 16 == 0);
  }
  g.first_block[kMaxGemvGroup] = static_cast<int>(blocks);
  if (blocks <= 0 || blocks > 0x7fffffff) return blocks <= 0 ? cudaSuccess : cudaErrorInvalidValue;
  if (aligned) {
    GemvKernel<kType, false><<<static_cast<int>(blocks), kThreads, 0, s>>>(g, x, n);
  } else {
    GemvKernel<kType, true><<<static_cast<int>(blocks), kThreads, 0, s>>>(g, x, n);
  }
  return Launched();
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

bool KnownType(int t) { return t == kF32 || t == kF16 || t == kBF16 || t == kQ8_0 || t == kQ4_0; }

}  // namespace

cudaError_t Gemv(const DeviceWeight& w, const float* x, int n, float* out, cudaStream_t s) {
  return GemvGroup(&w, &out, 1, x, n, s);
}

cudaError_t GemvGroup(const DeviceWeight* w, float* const* out, int count, const float* x, int n,
                      cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!w || !out || !x || count < 1 || count > kMaxGemvGroup || n > kMaxGemvTokens) {
    return cudaErrorInvalidValue;
  }
  for (int i = 0; i < count; ++i) {
    if (!w[i].data || !out[i] || !KnownType(w[i].type) || w[i].type != w[0].type ||
        w[i].cols != w[0].cols) {
      return cudaErrorInvalidValue;
    }
    if ((w[i].type == kQ8_0 || w[i].type == kQ4_0) && w[i].cols % 32 != 0)
      return cudaErrorInvalidValue;
  }
  switch (w[0].type) {
    case kF32:
      return LaunchGemv<kF32>(w, out, count, x, n, s);
    case kF16:
      return LaunchGemv<kF16>(w, out, count, x, n, s);
    case kBF16:
      return LaunchGemv<kBF16>(w, out, count, x, n, s);
    case kQ8_0:
      return LaunchGemv<kQ8_0>(w, out, count, x, n, s);
    default:
      return LaunchGemv<kQ4_0>(w, out, count, x, n, s);
  }
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

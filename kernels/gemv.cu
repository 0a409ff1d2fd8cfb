// Decode matmul: dequantize-and-dot GEMV over up to kMaxGemvTokens activation rows, so the
// weights are read once for the whole decode batch. A warp owns kRows weight rows: for each
// 8-column chunk it loads the activations once into registers and uses them for all of its
// rows (1 row per warp for 1-2 tokens, where parallelism matters; 4 rows for 3-8 tokens, where
// re-reading the activations per row would make L1 traffic, not HBM, the limit).
// Also the converters that feed cuBLAS for prefill (weights to half, activations to half/bf16).
#include "common.cuh"

namespace chorus::kernels {
namespace {

constexpr int kWarpsPerBlock = kThreads / 32;
constexpr int kChunk = 8;  // columns per lane and step
// Template type for the formats without a vectorized chunk loader (kernels.h ScalarChunkType):
// the kernel reads the weight's type at run time and loads values through WeightAt.
constexpr int kAnyType = -1;

// A group of weights sharing the input: block ranges [first_block[i], first_block[i + 1]) belong
// to weight i.
struct GemvGroupArgs {
  DeviceWeight w[kMaxGemvGroup];
  float* out[kMaxGemvGroup];
  int first_block[kMaxGemvGroup + 1];
};

// The kChunk weights of row `row` at columns [j0, j0 + kChunk) (j0 a multiple of kChunk; rows
// aligned as the launcher checked).
template <int kType>
__device__ __forceinline__ void LoadChunk(int type, const uint8_t* row, int64_t j0,
                                          float (&w)[kChunk]) {
  if constexpr (kType == kAnyType) {
    // A chunk never straddles a block (blocks are 32 or 256 values); WeightAt per value.
#pragma unroll
    for (int i = 0; i < kChunk; ++i) w[i] = WeightAt(type, row, j0 + i);
  } else if constexpr (kType == kQ8_0 || kType == kQ4_0) {
    constexpr int kBytes = kType == kQ8_0 ? 34 : 18;
    const int64_t b = j0 / 32;
    const int sub = static_cast<int>(j0 % 32) / kChunk;  // 0..3
    const uint16_t* blk = reinterpret_cast<const uint16_t*>(row + b * kBytes);
    const float d = HalfBits(blk[0]);
    if constexpr (kType == kQ8_0) {
#pragma unroll
      for (int i = 0; i < kChunk / 2; ++i) {
        const uint16_t u = blk[1 + sub * 4 + i];  // values 2i, 2i + 1 of this chunk
        w[2 * i] = d * static_cast<float>(static_cast<int8_t>(u & 0xff));
        w[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(u >> 8));
      }
    } else {
      // Values 0-15 are the low nibbles of bytes 0-15, values 16-31 the high nibbles.
      const int shift = sub >= 2 ? 4 : 0;
      const int first_byte = (sub & 1) * 8;
#pragma unroll
      for (int i = 0; i < kChunk / 2; ++i) {
        const uint16_t u = blk[1 + first_byte / 2 + i];  // bytes first_byte + 2i, + 2i + 1
        w[2 * i] = d * static_cast<float>(static_cast<int>((u >> shift) & 0xf) - 8);
        w[2 * i + 1] = d * static_cast<float>(static_cast<int>((u >> (8 + shift)) & 0xf) - 8);
      }
    }
  } else if constexpr (kType == kF16 || kType == kBF16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(row + 2 * j0);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint16_t lo = static_cast<uint16_t>(words[i] & 0xffff);
      const uint16_t hi = static_cast<uint16_t>(words[i] >> 16);
      w[2 * i] = kType == kF16 ? HalfBits(lo) : Bf16Bits(lo);
      w[2 * i + 1] = kType == kF16 ? HalfBits(hi) : Bf16Bits(hi);
    }
  } else {
    const float4 a = *reinterpret_cast<const float4*>(row + 4 * j0);
    const float4 c = *reinterpret_cast<const float4*>(row + 4 * j0 + 16);
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = c.x, w[5] = c.y, w[6] = c.z, w[7] = c.w;
  }
}

// Columns [j0, j0 + kChunk) of the first n activation rows (16-byte aligned) into registers.
template <int kTokens>
__device__ __forceinline__ void LoadActivations(const float* x, int64_t cols, int64_t j0, int n,
                                                float (&xv)[kTokens][kChunk]) {
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    if (t < n) {
      const float4* p = reinterpret_cast<const float4*>(x + t * cols + j0);
      const float4 a = p[0], c = p[1];
      xv[t][0] = a.x, xv[t][1] = a.y, xv[t][2] = a.z, xv[t][3] = a.w;
      xv[t][4] = c.x, xv[t][5] = c.y, xv[t][6] = c.z, xv[t][7] = c.w;
    }
  }
}

__device__ __forceinline__ float ChunkDot(const float (&w)[kChunk], const float (&x)[kChunk]) {
  float s = 0.0f;
#pragma unroll
  for (int i = 0; i < kChunk; ++i) s += w[i] * x[i];
  return s;
}

// Vectorized path (the launcher checks alignment and cols % kChunk == 0): lane l takes chunks
// l, l + 32, ...; kScalar: any layout, one value at a time, one row per warp.
template <int kType, bool kScalar, int kRows, int kTokens>
__global__ void GemvKernel(GemvGroupArgs g, const float* x, int n) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int which = 0;
#pragma unroll
  for (int i = 1; i < kMaxGemvGroup; ++i) which += static_cast<int>(blockIdx.x) >= g.first_block[i];
  const DeviceWeight& w = g.w[which];
  float* out = g.out[which];
  const int64_t r0 =
      (static_cast<int64_t>(blockIdx.x - g.first_block[which]) * kWarpsPerBlock + warp) * kRows;
  if (r0 >= w.rows) return;
  const int64_t cols = w.cols;
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  float acc[kRows][kTokens];
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[q][t] = 0.0f;
  }
  if constexpr (kScalar) {
    const uint8_t* row = base + r0 * w.row_bytes;
    for (int64_t j = lane; j < cols; j += 32) {
      const float wv = WeightAt(kType == kAnyType ? w.type : kType, row, j);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        if (t < n) acc[0][t] += wv * x[t * cols + j];
      }
    }
  } else {
    for (int64_t j0 = static_cast<int64_t>(lane) * kChunk; j0 < cols; j0 += 32 * kChunk) {
      float xv[kTokens][kChunk];
      LoadActivations<kTokens>(x, cols, j0, n, xv);
#pragma unroll
      for (int q = 0; q < kRows; ++q) {
        if (r0 + q < w.rows) {
          float wv[kChunk];
          LoadChunk<kType>(w.type, base + (r0 + q) * w.row_bytes, j0, wv);
#pragma unroll
          for (int t = 0; t < kTokens; ++t) {
            if (t < n) acc[q][t] += ChunkDot(wv, xv[t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < n) {
        const float v = WarpSum(acc[q][t]);
        if (lane == 0 && r0 + q < w.rows) out[t * w.rows + r0 + q] = v;
      }
    }
  }
}

template <int kType, bool kScalar, int kRows, int kTokens>
cudaError_t LaunchGemvRows(const DeviceWeight* w, float* const* out, int count, const float* x,
                           int n, cudaStream_t s) {
  GemvGroupArgs g{};
  int64_t blocks = 0;
  for (int i = 0; i < kMaxGemvGroup; ++i) {
    const int k = i < count ? i : count - 1;  // unused slots repeat the last weight, no blocks
    g.w[i] = w[k];
    g.out[i] = out[k];
    g.first_block[i] = static_cast<int>(blocks);
    if (i < count) blocks += (w[i].rows + kWarpsPerBlock * kRows - 1) / (kWarpsPerBlock * kRows);
  }
  g.first_block[kMaxGemvGroup] = static_cast<int>(blocks);
  if (blocks <= 0) return cudaSuccess;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  GemvKernel<kType, kScalar, kRows, kTokens><<<static_cast<int>(blocks), kThreads, 0, s>>>(g, x, n);
  return Launched();
}

template <int kType>
cudaError_t LaunchGemv(const DeviceWeight* w, float* const* out, int count, const float* x, int n,
                       cudaStream_t s) {
  // Vector loads need every row start, and every x row, at a 16-byte boundary (quantized
  // types: 2-byte block fields, 16-byte x rows), and whole chunks.
  bool aligned = reinterpret_cast<uintptr_t>(x) % 16 == 0;
  for (int i = 0; i < count; ++i) {
    aligned =
        aligned && w[i].cols % kChunk == 0 && reinterpret_cast<uintptr_t>(w[i].data) % 16 == 0 &&
        (kType == kAnyType ||
         ((kType == kQ8_0 || kType == kQ4_0) ? w[i].row_bytes % 2 == 0
                                             : w[i].row_bytes % 16 == 0));
  }
  // Registers hold kTokens activation rows: 2 for the batch-1 path keeps occupancy high.
  if (!aligned) return LaunchGemvRows<kType, true, 1, kMaxGemvTokens>(w, out, count, x, n, s);
  if (n <= 2) return LaunchGemvRows<kType, false, 1, 2>(w, out, count, x, n, s);
  return LaunchGemvRows<kType, false, 4, kMaxGemvTokens>(w, out, count, x, n, s);
}

// Gate and up projections with SwiGLU in the epilogue: a warp computes rows r0 .. r0 + kRows - 1
// of both weights for all tokens, then writes up and silu(gate) * up (into gate's output).
template <int kType, int kRows, int kTokens>
__global__ void GemvSwiGluKernel(DeviceWeight wg, DeviceWeight wu, const float* x, int n,
                                 float* out_gate, float* out_up) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t r0 = (static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp) * kRows;
  if (r0 >= wg.rows) return;
  const int64_t cols = wg.cols;
  float ag[kRows][kTokens], au[kRows][kTokens];
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) ag[q][t] = au[q][t] = 0.0f;
  }
  for (int64_t j0 = static_cast<int64_t>(lane) * kChunk; j0 < cols; j0 += 32 * kChunk) {
    float xv[kTokens][kChunk];
    LoadActivations<kTokens>(x, cols, j0, n, xv);
#pragma unroll
    for (int q = 0; q < kRows; ++q) {
      if (r0 + q < wg.rows) {
        float g[kChunk], u[kChunk];
        LoadChunk<kType>(wg.type, static_cast<const uint8_t*>(wg.data) + (r0 + q) * wg.row_bytes,
                         j0, g);
        LoadChunk<kType>(wu.type, static_cast<const uint8_t*>(wu.data) + (r0 + q) * wu.row_bytes,
                         j0, u);
#pragma unroll
        for (int t = 0; t < kTokens; ++t) {
          if (t < n) {
            ag[q][t] += ChunkDot(g, xv[t]);
            au[q][t] += ChunkDot(u, xv[t]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      if (t < n) {
        const float gv = WarpSum(ag[q][t]), uv = WarpSum(au[q][t]);
        if (lane == 0 && r0 + q < wg.rows) {
          out_up[t * wg.rows + r0 + q] = uv;
          out_gate[t * wg.rows + r0 + q] = gv / (1.0f + expf(-gv)) * uv;
        }
      }
    }
  }
}

template <int kType>
cudaError_t LaunchGemvSwiGlu(const DeviceWeight& wg, const DeviceWeight& wu, const float* x, int n,
                             float* out_gate, float* out_up, cudaStream_t s) {
  const bool aligned =
      reinterpret_cast<uintptr_t>(x) % 16 == 0 && wg.cols % kChunk == 0 &&
      reinterpret_cast<uintptr_t>(wg.data) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(wu.data) % 16 == 0 &&
      (kType == kAnyType ||
       ((kType == kQ8_0 || kType == kQ4_0) ? wg.row_bytes % 2 == 0 : wg.row_bytes % 16 == 0));
  if (!aligned) return cudaErrorInvalidValue;  // the caller falls back to the unfused ops
  if (n <= 2) {
    const int blocks = static_cast<int>((wg.rows + kWarpsPerBlock - 1) / kWarpsPerBlock);
    GemvSwiGluKernel<kType, 1, 2><<<blocks, kThreads, 0, s>>>(wg, wu, x, n, out_gate, out_up);
  } else {
    const int blocks = static_cast<int>((wg.rows + 2 * kWarpsPerBlock - 1) / (2 * kWarpsPerBlock));
    GemvSwiGluKernel<kType, 2, kMaxGemvTokens>
        <<<blocks, kThreads, 0, s>>>(wg, wu, x, n, out_gate, out_up);
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

bool KnownType(int t) { return BlockBytes(t) > 0; }
bool ByteAligned(int t) { return t == kQ8_0 || t == kQ4_0 || ScalarChunkType(t); }

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
    if (w[i].cols % BlockValues(w[i].type) != 0) return cudaErrorInvalidValue;
  }
  if (ScalarChunkType(w[0].type)) return LaunchGemv<kAnyType>(w, out, count, x, n, s);
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

bool GemvSwiGluSupported(const DeviceWeight& gate, const DeviceWeight& up, const float* x) {
  return KnownType(gate.type) && gate.type == up.type && gate.rows == up.rows &&
         gate.cols == up.cols && gate.cols % kChunk == 0 && gate.data && up.data &&
         reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(gate.data) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(up.data) % 16 == 0 &&
         (ByteAligned(gate.type)
              ? gate.cols % BlockValues(gate.type) == 0 &&
                    (ScalarChunkType(gate.type) || gate.row_bytes % 2 == 0)
              : gate.row_bytes % 16 == 0);
}

cudaError_t GemvSwiGlu(const DeviceWeight& gate, const DeviceWeight& up, const float* x, int n,
                       float* out_gate, float* out_up, cudaStream_t s) {
  if (n <= 0) return cudaSuccess;
  if (!x || !out_gate || !out_up || n > kMaxGemvTokens || !GemvSwiGluSupported(gate, up, x)) {
    return cudaErrorInvalidValue;
  }
  if (ScalarChunkType(gate.type)) {
    return LaunchGemvSwiGlu<kAnyType>(gate, up, x, n, out_gate, out_up, s);
  }
  switch (gate.type) {
    case kF32:
      return LaunchGemvSwiGlu<kF32>(gate, up, x, n, out_gate, out_up, s);
    case kF16:
      return LaunchGemvSwiGlu<kF16>(gate, up, x, n, out_gate, out_up, s);
    case kBF16:
      return LaunchGemvSwiGlu<kBF16>(gate, up, x, n, out_gate, out_up, s);
    case kQ8_0:
      return LaunchGemvSwiGlu<kQ8_0>(gate, up, x, n, out_gate, out_up, s);
    default:
      return LaunchGemvSwiGlu<kQ4_0>(gate, up, x, n, out_gate, out_up, s);
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

// Device helpers shared by the kernel files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.h"

namespace chorus::kernels {

constexpr int kThreads = 256;

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ float HalfBits(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float Bf16Bits(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}
__device__ __forceinline__ uint16_t Load16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));  // unaligned-safe little endian
}

// Element j of a weight row (random access; used by gathers, not hot loops).
__device__ __forceinline__ float WeightAt(int type, const uint8_t* row, int64_t j) {
  switch (type) {
    case kF32:
      return reinterpret_cast<const float*>(row)[j];
    case kF16:
      return HalfBits(Load16(row + 2 * j));
    case kBF16:
      return Bf16Bits(Load16(row + 2 * j));
    case kQ8_0: {
      const uint8_t* b = row + (j / 32) * 34;
      return HalfBits(Load16(b)) * static_cast<float>(static_cast<int8_t>(b[2 + j % 32]));
    }
    case kQ4_0: {
      const uint8_t* b = row + (j / 32) * 18;
      const int i = static_cast<int>(j % 32);
      const uint8_t q = b[2 + (i & 15)];
      const int v = (i < 16 ? (q & 0xf) : (q >> 4)) - 8;
      return HalfBits(Load16(b)) * static_cast<float>(v);
    }
    default:
      return 0.0f;
  }
}

// K/V cache elements: float or half, read as float.
__device__ __forceinline__ float KvLoad(const float* p) { return *p; }
__device__ __forceinline__ float KvLoad(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ void KvStore(float* p, float v) { *p = v; }
__device__ __forceinline__ void KvStore(__half* p, float v) { *p = __float2half_rn(v); }

// Row of the paged cache holding position p of the sequence whose block table is `table`.
__device__ __forceinline__ int64_t Slot(const int32_t* table, int p, int block_size) {
  return static_cast<int64_t>(table[p / block_size]) * block_size + p % block_size;
}
// The block table of batch row t's sequence.
__device__ __forceinline__ const int32_t* TableOf(const DeviceLayout& l, int t) {
  return l.block_tables + static_cast<int64_t>(l.seq_of_token[t]) * l.max_blocks_per_seq;
}

// Rotates pair i of one head (adjacent dims 2i, 2i+1, or halves i, i + rope_dim / 2) by the
// angle of position pos.
__device__ __forceinline__ void RotatePair(float* head, int i, int pos, int rope_dim,
                                           float freq_base, bool halves) {
  const int half = rope_dim / 2;
  const float freq =
      1.0f / powf(freq_base, static_cast<float>(2 * i) / static_cast<float>(rope_dim));
  float s, c;
  sincosf(static_cast<float>(pos) * freq, &s, &c);
  const int p0 = halves ? i : 2 * i, p1 = halves ? i + half : 2 * i + 1;
  const float x0 = head[p0], x1 = head[p1];
  head[p0] = x0 * c - x1 * s;
  head[p1] = x0 * s + x1 * c;
}

inline cudaError_t Launched() { return cudaGetLastError(); }
inline int Blocks(int64_t n, int threads = kThreads) {
  return static_cast<int>((n + threads - 1) / threads);
}

}  // namespace chorus::kernels

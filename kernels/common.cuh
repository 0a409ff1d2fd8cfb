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

// Scale and min (6 bits each) of sub-block j < 8 of a Q4_K / Q5_K super-block.
__device__ __forceinline__ void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Element i < 256 of a K-quant super-block b (ggml's layouts; kernels.h lists the sizes).
__device__ __forceinline__ float KQuantAt(int type, const uint8_t* b, int i) {
  if (type == kQ6_K) {
    const int half = i / 128, r = i % 128, grp = r / 32, l = r % 32;
    const uint8_t* ql = b + half * 64;
    const int hi = (b[128 + half * 32 + l] >> (2 * grp)) & 3;
    const int lo = (grp & 1 ? ql[l + 32] : ql[l]) >> (grp >= 2 ? 4 : 0) & 0xf;
    const int sc = static_cast<int8_t>(b[192 + half * 8 + l / 16 + 2 * grp]);
    return HalfBits(Load16(b + 208)) * static_cast<float>(sc * ((lo | (hi << 4)) - 32));
  }
  // Q4_K / Q5_K: d, dmin, 12 scale bytes, (Q5_K: 32 bytes of high bits), quants.
  const int sb = i / 32, l = i % 32;
  int sc, m;
  ScaleMinK4(sb, b + 4, &sc, &m);
  const uint8_t* qs = b + (type == kQ5_K ? 48 : 16);
  int q = (qs[(sb / 2) * 32 + l] >> (4 * (sb & 1))) & 0xf;
  if (type == kQ5_K) q |= ((b[16 + l] >> sb) & 1) << 4;
  return HalfBits(Load16(b)) * static_cast<float>(sc * q) -
         HalfBits(Load16(b + 2)) * static_cast<float>(m);
}

// Element i < 32 of a Q4_1 / Q5_0 / Q5_1 block b.
__device__ __forceinline__ float Q5Q41At(int type, const uint8_t* b, int i) {
  const bool has_min = type != kQ5_0;
  const uint8_t* qs = b + (type == kQ4_1 ? 4 : type == kQ5_0 ? 6 : 8);
  int q = (qs[i & 15] >> (i < 16 ? 0 : 4)) & 0xf;
  if (type != kQ4_1) {
    const uint8_t* h = b + (has_min ? 4 : 2);
    q |= ((h[i / 8] >> (i % 8)) & 1) << 4;
  }
  const float d = HalfBits(Load16(b));
  if (!has_min) return d * static_cast<float>(q - 16);
  return d * static_cast<float>(q) + HalfBits(Load16(b + 2));
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
    case kQ8_0R:
    case kQ4_0R: {
      const uint8_t* g = row + (j / 256) * BlockBytes(type);
      const int i = static_cast<int>(j % 256);
      const float d = HalfBits(Load16(g + 2 * (i / 32)));
      if (type == kQ8_0R) return d * static_cast<float>(static_cast<int8_t>(g[16 + i]));
      const uint8_t q = g[16 + (i / 32) * 16 + (i % 16)];
      return d * static_cast<float>(((i % 32) < 16 ? (q & 0xf) : (q >> 4)) - 8);
    }
    case kQ4_1:
    case kQ5_0:
    case kQ5_1:
      return Q5Q41At(type, row + (j / 32) * BlockBytes(type), static_cast<int>(j % 32));
    case kQ4_K:
    case kQ5_K:
    case kQ6_K:
      return KQuantAt(type, row + (j / 256) * BlockBytes(type), static_cast<int>(j % 256));
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
// angle of position pos (kernels.h: RopeArgs).
__device__ __forceinline__ void RotatePair(float* head, int i, int pos, const RopeArgs& r) {
  const int half = r.rope_dim / 2;
  float freq =
      1.0f / powf(r.freq_base, static_cast<float>(2 * i) / static_cast<float>(r.rope_dim));
  if (r.freq_scale != 1.0f) freq *= r.freq_scale;
  if (r.freq_factors != nullptr) freq /= r.freq_factors[i];
  float s, c;
  sincosf(static_cast<float>(pos) * freq, &s, &c);
  const int p0 = r.halves ? i : 2 * i, p1 = r.halves ? i + half : 2 * i + 1;
  const float x0 = head[p0], x1 = head[p1];
  head[p0] = x0 * c - x1 * s;
  head[p1] = x0 * s + x1 * c;
}

inline cudaError_t Launched() { return cudaGetLastError(); }
inline int Blocks(int64_t n, int threads = kThreads) {
  return static_cast<int>((n + threads - 1) / threads);
}

}  // namespace chorus::kernels

// Device-side pieces shared by the GEMV kernels (kernels/gemv.cu, kernels/gemv_swiglu.cu): what a
// lane loads per step for each weight layout, how a load becomes floats, and the row loop.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace chorus::kernels::gemv {

constexpr int kChunk = 8;  // columns per multiply step
constexpr int kWarpsPerBlock = kThreads / 32;
// Template type for the formats without a vectorized loader (kernels.h ScalarChunkType): the
// kernel reads the weight's type at run time and loads values through WeightAt.
constexpr int kAnyType = -1;

// Columns a lane loads per step (a multiple of kChunk).
__host__ __device__ constexpr int LaneColsOf(int type) {
  return type == kQ4_0R ? 32 : type == kQ8_0R ? 16 : kChunk;
}

// One lane's load for one row: up to 32 bytes of weights and a block scale.
struct Raw {
  uint4 a, b;
  float d;
};

// LaneColsOf(kType) weights of one row starting at column j0 (a multiple of LaneColsOf; rows
// aligned as the launcher checked).
template <int kType>
__device__ __forceinline__ Raw LoadRaw(int type, const uint8_t* row, int64_t j0) {
  Raw r{};
  if constexpr (kType == kQ4_0R || kType == kQ8_0R) {
    const uint8_t* g = row + (j0 / 256) * BlockBytes(kType);
    const int i = static_cast<int>(j0 % 256);
    r.d = HalfBits(*reinterpret_cast<const uint16_t*>(g + 2 * (i / 32)));
    r.a = *reinterpret_cast<const uint4*>(g + 16 + (kType == kQ8_0R ? i : i / 2));
  } else if constexpr (kType == kQ8_0 || kType == kQ4_0) {
    // ggml's blocks (34 / 18 bytes) are only 2-byte aligned: four 2-byte loads.
    constexpr int kBytes = kType == kQ8_0 ? 34 : 18;
    const int sub = static_cast<int>(j0 % 32) / kChunk;  // 0..3
    const uint16_t* blk = reinterpret_cast<const uint16_t*>(row + (j0 / 32) * kBytes);
    r.d = HalfBits(blk[0]);
    // Q8_0: values 8 sub .. 8 sub + 7; Q4_0: bytes (sub & 1) * 8 .. + 7, nibble shift in b.x.
    const int first = kType == kQ8_0 ? sub * 4 : (sub & 1) * 4;
    r.a.x = blk[1 + first] | (static_cast<uint32_t>(blk[2 + first]) << 16);
    r.a.y = blk[3 + first] | (static_cast<uint32_t>(blk[4 + first]) << 16);
    r.b.x = sub >= 2 ? 4 : 0;
  } else if constexpr (kType == kF16 || kType == kBF16) {
    r.a = *reinterpret_cast<const uint4*>(row + 2 * j0);
  } else if constexpr (kType == kF32) {
    r.a = *reinterpret_cast<const uint4*>(row + 4 * j0);
    r.b = *reinterpret_cast<const uint4*>(row + 4 * j0 + 16);
  } else {
    // A chunk never straddles a block (blocks are 32 or 256 values); WeightAt per value.
    float w[kChunk];
#pragma unroll
    for (int i = 0; i < kChunk; ++i) w[i] = WeightAt(type, row, j0 + i);
    r.a = make_uint4(__float_as_uint(w[0]), __float_as_uint(w[1]), __float_as_uint(w[2]),
                     __float_as_uint(w[3]));
    r.b = make_uint4(__float_as_uint(w[4]), __float_as_uint(w[5]), __float_as_uint(w[6]),
                     __float_as_uint(w[7]));
  }
  return r;
}

// Eight signed bytes (lo: values 0-3, hi: 4-7) times d.
__device__ __forceinline__ void Int8x8(uint32_t lo, uint32_t hi, float d, float (&w)[kChunk]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    w[i] = d * static_cast<float>(static_cast<int8_t>((lo >> (8 * i)) & 0xff));
    w[4 + i] = d * static_cast<float>(static_cast<int8_t>((hi >> (8 * i)) & 0xff));
  }
}
// The nibble at `shift` of eight bytes, minus 8, times d.
__device__ __forceinline__ void Nibble8(uint32_t lo, uint32_t hi, int shift, float d,
                                        float (&w)[kChunk]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    w[i] = d * static_cast<float>(static_cast<int>((lo >> (8 * i + shift)) & 0xf) - 8);
    w[4 + i] = d * static_cast<float>(static_cast<int>((hi >> (8 * i + shift)) & 0xf) - 8);
  }
}
// Eight 16-bit floats (half or bfloat16) from four words.
template <int kType>
__device__ __forceinline__ void Half8(const uint4& a, float (&w)[kChunk]) {
  const uint32_t words[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint16_t lo = static_cast<uint16_t>(words[i] & 0xffff);
    const uint16_t hi = static_cast<uint16_t>(words[i] >> 16);
    w[2 * i] = kType == kF16 ? HalfBits(lo) : Bf16Bits(lo);
    w[2 * i + 1] = kType == kF16 ? HalfBits(hi) : Bf16Bits(hi);
  }
}

// The k-th kChunk columns of a lane's load, as floats.
template <int kType>
__device__ __forceinline__ void Piece(const Raw& r, int k, float (&w)[kChunk]) {
  if constexpr (kType == kQ8_0R) {
    Int8x8(k ? r.a.z : r.a.x, k ? r.a.w : r.a.y, r.d, w);
  } else if constexpr (kType == kQ4_0R) {
    // ggml's block order: values 0-15 are the low nibbles of bytes 0-15, 16-31 the high ones.
    Nibble8((k & 1) ? r.a.z : r.a.x, (k & 1) ? r.a.w : r.a.y, k >= 2 ? 4 : 0, r.d, w);
  } else if constexpr (kType == kQ8_0) {
    Int8x8(r.a.x, r.a.y, r.d, w);
  } else if constexpr (kType == kQ4_0) {
    Nibble8(r.a.x, r.a.y, static_cast<int>(r.b.x), r.d, w);
  } else if constexpr (kType == kF16 || kType == kBF16) {
    Half8<kType>(r.a, w);
  } else {
    w[0] = __uint_as_float(r.a.x), w[1] = __uint_as_float(r.a.y);
    w[2] = __uint_as_float(r.a.z), w[3] = __uint_as_float(r.a.w);
    w[4] = __uint_as_float(r.b.x), w[5] = __uint_as_float(r.b.y);
    w[6] = __uint_as_float(r.b.z), w[7] = __uint_as_float(r.b.w);
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

// acc[q][t] += dot(rows r0 + q, x[t]) over the lane's columns j0 = (first + 32 i) * LaneColsOf
// for i = 0, stride, 2 stride, ...
template <int kType, int kRows, int kTokens>
__device__ __forceinline__ void AccumulateRows(const DeviceWeight& w, int64_t r0, const float* x,
                                               int n, int64_t first, int64_t stride,
                                               float (&acc)[kRows][kTokens]) {
  constexpr int kLane = LaneColsOf(kType);
  const uint8_t* base = static_cast<const uint8_t*>(w.data);
  for (int64_t j0 = first * kLane; j0 < w.cols; j0 += stride * kLane) {
    Raw raw[kRows];
#pragma unroll
    for (int q = 0; q < kRows; ++q) {
      if (r0 + q < w.rows) raw[q] = LoadRaw<kType>(w.type, base + (r0 + q) * w.row_bytes, j0);
    }
#pragma unroll
    for (int k = 0; k < kLane / kChunk; ++k) {
      float xv[kTokens][kChunk];
      LoadActivations<kTokens>(x, w.cols, j0 + k * kChunk, n, xv);
#pragma unroll
      for (int q = 0; q < kRows; ++q) {
        if (r0 + q < w.rows) {
          float wv[kChunk];
          Piece<kType>(raw[q], k, wv);
#pragma unroll
          for (int t = 0; t < kTokens; ++t) {
            if (t < n) acc[q][t] += ChunkDot(wv, xv[t]);
          }
        }
      }
    }
  }
}

inline bool KnownType(int t) { return BlockBytes(t) > 0; }

// f(std::integral_constant<int, T>{}) with T the kernels' template type for a weight of `type`
// (kAnyType for the types read value by value): one instantiation per layout.
template <typename F>
auto DispatchType(int type, F&& f) {
  using I = int;
  if (ScalarChunkType(type)) return f(std::integral_constant<I, kAnyType>{});
  switch (type) {
    case kF32:
      return f(std::integral_constant<I, kF32>{});
    case kF16:
      return f(std::integral_constant<I, kF16>{});
    case kBF16:
      return f(std::integral_constant<I, kBF16>{});
    case kQ8_0:
      return f(std::integral_constant<I, kQ8_0>{});
    case kQ8_0R:
      return f(std::integral_constant<I, kQ8_0R>{});
    case kQ4_0R:
      return f(std::integral_constant<I, kQ4_0R>{});
    default:
      return f(std::integral_constant<I, kQ4_0>{});
  }
}
inline bool ByteAligned(int t) { return t == kQ8_0 || t == kQ4_0 || ScalarChunkType(t); }

}  // namespace chorus::kernels::gemv

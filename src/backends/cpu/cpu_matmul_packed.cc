// CPU matmul kernels, int8 path over the 16-row packed copies of Q8_0 / Q4_0 / Q4_K / Q6_K
// (layout: cpu_int8_packed.h). Per token and 32-value block, 8 vpdpbusd (16 rows x 4 values
// each, the activations' 4 bytes broadcast from memory) in two chains (values 0-15 and 16-31),
// one conversion, and the scales applied to all 16 rows at once; the weights of a block are
// loaded and unpacked once for a tile of up to 4 tokens.
#include <immintrin.h>

#include <cassert>
#include <cstring>

#include "src/backends/cpu/cpu_int8_packed.h"
#include "src/backends/cpu/cpu_simd.h"

namespace chorus::cpu {
namespace {

#if CHORUS_INT8_PACKED
inline __m512i Bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline __m512 F16x16(const uint8_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 U8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
inline __m512 I8x16(const uint8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}

// With several tokens the kernel computes long enough per block that the hardware prefetcher
// falls behind the stream of records (measured on the Q8_0 8-token tile: -15% time); one token
// streams at memory speed without it, and the extra instructions cost there.
template <int kNt>
inline void PrefetchFor(const uint8_t* p, int64_t bytes) {
  if constexpr (kNt > 1) {
    for (int64_t l = 0; l < bytes; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p + l), _MM_HINT_T0);
  }
}

// The 8 chunks of a block: Q8_0's bytes, or Q4_0-style nibble pairs (pair p: chunks p, p + 4).
template <bool kNibbles>
inline void LoadChunks(const uint8_t* q, __m512i w[8]) {
  if constexpr (kNibbles) {
    const __m512i m = _mm512_set1_epi8(0x0f);
#pragma GCC unroll 4
    for (int p = 0; p < 4; ++p) {
      const __m512i l = _mm512_loadu_si512(q + 64 * p);
      w[p] = _mm512_and_si512(l, m);
      w[p + 4] = _mm512_and_si512(_mm512_srli_epi16(l, 4), m);
    }
  } else {
#pragma GCC unroll 8
    for (int c = 0; c < 8; ++c) w[c] = _mm512_loadu_si512(q + 64 * c);
  }
}

// Integer dots of the 16 rows with one activation block: s[0] over values 0-15, s[1] 16-31.
inline void HalfDots(const __m512i w[8], const ActBlockQ8& xb, __m512i s[2]) {
  s[0] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[0], Bcast4(xb.qs));
  s[1] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[4], Bcast4(xb.qs + 16));
#pragma GCC unroll 3
  for (int c = 1; c < 4; ++c) {
    s[0] = _mm512_dpbusd_epi32(s[0], w[c], Bcast4(xb.qs + 4 * c));
    s[1] = _mm512_dpbusd_epi32(s[1], w[c + 4], Bcast4(xb.qs + 16 + 4 * c));
  }
}

// Q8_0 / Q4_0: acc += dw * dx * dot, offs += dw * (dx * sum(xq)); the result acc - offset * offs.
template <GgmlType kType, int kNt>
void GroupDotsQ(const uint8_t* rec, int64_t nb, const ActBlockQ8* const* x, float* res,
                int64_t out_stride) {
  constexpr bool kQ8 = kType == GgmlType::kQ8_0;
  constexpr int64_t kRec = kQ8 ? 32 + 8 * 64 : 32 + 4 * 64;
  __m512 acc[kNt], offs[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = offs[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b, rec += kRec) {
    PrefetchFor<kNt>(rec + 4 * kRec, kRec);
    const __m512 dw = F16x16(rec);
    __m512i w[8];
    LoadChunks<!kQ8>(rec + 32, w);
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) {
      const ActBlockQ8& xb = x[t][b];
      __m512i s[2];
      HalfDots(w, xb, s);
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(s[0], s[1]));
      acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, dot), _mm512_set1_ps(xb.d), acc[t]);
      offs[t] = _mm512_fmadd_ps(dw, _mm512_set1_ps(xb.s), offs[t]);
    }
  }
  const __m512 offset = _mm512_set1_ps(kQ8 ? 128.0f : 8.0f);
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t)
    _mm512_storeu_ps(res + t * out_stride, _mm512_fnmadd_ps(offset, offs[t], acc[t]));
}

// Q4_K: per sub-block, d * sc and dmin * m for the 16 rows; acc += d * sc * dx * dot and
// mins += dmin * m * (dx * sum(xq)).
template <int kNt>
void GroupDotsQ4K(const uint8_t* rec, int64_t nsb, const ActBlockQ8* const* x, float* res,
                  int64_t out_stride) {
  constexpr int64_t kSub = 32 + 4 * 64, kSuper = 64 + 8 * kSub;
  __m512 acc[kNt], mins[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = mins[t] = _mm512_setzero_ps();
  for (int64_t sb = 0; sb < nsb; ++sb, rec += kSuper) {
    const __m512 d = F16x16(rec), dmin = F16x16(rec + 32);
    const uint8_t* sub = rec + 64;
    for (int j = 0; j < 8; ++j, sub += kSub) {
      PrefetchFor<kNt>(sub + kSuper, kSub);
      const __m512 ds = _mm512_mul_ps(d, U8x16(sub));
      const __m512 dm = _mm512_mul_ps(dmin, U8x16(sub + 16));
      __m512i w[8];
      LoadChunks<true>(sub + 32, w);
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const ActBlockQ8& xb = x[t][sb * 8 + j];
        __m512i s[2];
        HalfDots(w, xb, s);
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(s[0], s[1]));
        acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(ds, dot), _mm512_set1_ps(xb.d), acc[t]);
        mins[t] = _mm512_fmadd_ps(dm, _mm512_set1_ps(xb.s), mins[t]);
      }
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t)
    _mm512_storeu_ps(res + t * out_stride, _mm512_sub_ps(acc[t], mins[t]));
}

// Q6_K: q = low nibble | high bit pair << 4 (0..63); per 16-value half h, acc += d * sc_h * dx *
// dot_h and offs += d * sc_h * (dx * sum_h(xq)); the result acc - 32 * offs.
template <int kNt>
void GroupDotsQ6K(const uint8_t* rec, int64_t nsb, const ActBlockQ8* const* x, float* res,
                  int64_t out_stride) {
  constexpr int64_t kSub = 32 + 4 * 64 + 2 * 64, kSuper = 32 + 8 * kSub;
  __m512 acc[kNt], offs[kNt];
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) acc[t] = offs[t] = _mm512_setzero_ps();
  const __m512i three = _mm512_set1_epi8(3);
  for (int64_t sb = 0; sb < nsb; ++sb, rec += kSuper) {
    const __m512 d = F16x16(rec);
    const uint8_t* sub = rec + 32;
    for (int j = 0; j < 8; ++j, sub += kSub) {
      PrefetchFor<kNt>(sub + kSuper, kSub);
      const __m512 ds0 = _mm512_mul_ps(d, I8x16(sub)), ds1 = _mm512_mul_ps(d, I8x16(sub + 16));
      __m512i w[8];
      LoadChunks<true>(sub + 32, w);
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        const __m512i hb = _mm512_loadu_si512(sub + 32 + 256 + 64 * h);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m512i bits = _mm512_and_si512(_mm512_srli_epi16(hb, 2 * k), three);
          w[4 * h + k] = _mm512_or_si512(w[4 * h + k], _mm512_slli_epi16(bits, 4));
        }
      }
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const ActBlockQ8& xb = x[t][sb * 8 + j];
        __m512i s[2];
        HalfDots(w, xb, s);
        const __m512 v = _mm512_fmadd_ps(ds1, _mm512_cvtepi32_ps(s[1]),
                                         _mm512_mul_ps(ds0, _mm512_cvtepi32_ps(s[0])));
        acc[t] = _mm512_fmadd_ps(v, _mm512_set1_ps(xb.d), acc[t]);
        offs[t] = _mm512_fmadd_ps(ds0, _mm512_set1_ps(xb.hs[0]), offs[t]);
        offs[t] = _mm512_fmadd_ps(ds1, _mm512_set1_ps(xb.hs[1]), offs[t]);
      }
    }
  }
  const __m512 offset = _mm512_set1_ps(32.0f);
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t)
    _mm512_storeu_ps(res + t * out_stride, _mm512_fnmadd_ps(offset, offs[t], acc[t]));
}

template <GgmlType kType>
void MatMulPacked(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                  float* out, int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t nb = w.cols / kQK, nsb = w.cols / kQK_K;
  const int64_t group_bytes = PackedGroupBytes(kType, w.cols);
  // A partial group would write other rows' outputs.
  assert(row_begin % kPackRows == 0 && row_end % kPackRows == 0);
  for (int64_t g = row_begin / kPackRows; g < row_end / kPackRows; ++g) {
    const uint8_t* rec = packed + g * group_bytes;
    ForTokenTiles(xq, nb, m, [&](auto nt, int j, const ActBlockQ8* const* x) {
      constexpr int kNt = decltype(nt)::value;
      float* res = out + static_cast<int64_t>(j) * out_stride + kPackRows * g;
      if constexpr (kType == GgmlType::kQ4_K) {
        GroupDotsQ4K<kNt>(rec, nsb, x, res, out_stride);
      } else if constexpr (kType == GgmlType::kQ6_K) {
        GroupDotsQ6K<kNt>(rec, nsb, x, res, out_stride);
      } else {
        GroupDotsQ<kType, kNt>(rec, nb, x, res, out_stride);
      }
    });
  }
}
#endif

}  // namespace

void MatMulRowsInt8Packed(const WeightTensor& w, const uint8_t* packed, const ActBlockQ8* xq, int m,
                          float* out, int64_t out_stride, int64_t row_begin, int64_t row_end) {
#if CHORUS_INT8_PACKED
  switch (w.type) {
    case GgmlType::kQ8_0:
      return MatMulPacked<GgmlType::kQ8_0>(w, packed, xq, m, out, out_stride, row_begin, row_end);
    case GgmlType::kQ4_0:
      return MatMulPacked<GgmlType::kQ4_0>(w, packed, xq, m, out, out_stride, row_begin, row_end);
    case GgmlType::kQ4_K:
      return MatMulPacked<GgmlType::kQ4_K>(w, packed, xq, m, out, out_stride, row_begin, row_end);
    case GgmlType::kQ6_K:
      return MatMulPacked<GgmlType::kQ6_K>(w, packed, xq, m, out, out_stride, row_begin, row_end);
    default:
      assert(false && "not a packed type");
  }
#else
  (void)w, (void)packed, (void)xq, (void)m, (void)out, (void)out_stride, (void)row_begin,
      (void)row_end;
#endif
}

}  // namespace chorus::cpu

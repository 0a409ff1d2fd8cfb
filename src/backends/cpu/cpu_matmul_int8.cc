// CPU matmul kernels, int8 path: activations rounded to int8 blocks (QuantizeActivations) and
// integer block dots against Q8_0 / Q4_0 weights, and with AVX2 against Q4_K / Q5_K / Q6_K
// super-blocks, over the weights' own layout (with AVX512-VNNI, Q8_0/Q4_0/Q4_K/Q6_K usually run
// from the 16-row packed copy instead: cpu_matmul_packed.cc). The default for quantized weights
// (CreateCpuBackend's int8_activations); the exact float path is cpu_matmul.cc.
#include <immintrin.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "chorus/backends/cpu_backend.h"
#include "src/backends/cpu/cpu_simd.h"

namespace chorus::cpu {

// A block holding a NaN or an infinity: no integer rounding means anything, so the block reads
// as NaN (d, s and hs) with zero quants, and every dot with it is NaN, as on the exact path.
static void NonFiniteBlock(ActBlockQ8* out) {
  std::memset(out->qs, 0, sizeof(out->qs));
  out->d = out->s = out->hs[0] = out->hs[1] = std::numeric_limits<float>::quiet_NaN();
}

// 1 / d, or 0 where that would overflow (a block of values below ~1e-36, or zeros): such a block
// rounds to zeros.
static inline float InverseScale(float d) { return d >= FLT_MIN ? 1.0f / d : 0.0f; }

#if defined(__AVX2__) && defined(__FMA__)
// Sum of the 8 int32 lanes.
static inline int HsumI32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// One block, the same arithmetic as the scalar loop below (float multiply, then round to
// nearest even as lrintf does in the default rounding mode): the results are identical.
static inline void QuantizeBlock(const float* v, ActBlockQ8* out) {
  const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
  __m256 x[4], amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    x[i] = _mm256_loadu_ps(v + 8 * i);
    const __m256 a = _mm256_andnot_ps(sign, x[i]);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));  // NaN or infinity
    amax = _mm256_max_ps(a, amax);
  }
  if (_mm256_movemask_ps(bad) != 0) return NonFiniteBlock(out);
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 0x55));
  const float d = _mm_cvtss_f32(m) / 127.0f;
  const __m256 id = _mm256_set1_ps(InverseScale(d));
  __m256i q[4];
  for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(x[i], id));
  const int h0 = HsumI32(_mm256_add_epi32(q[0], q[1]));
  const int h1 = HsumI32(_mm256_add_epi32(q[2], q[3]));
  // packs work per 128-bit lane: [q0 lo, q1 lo, q0 hi, q1 hi] -> bytes in dword order 0 4 1 5 ...
  const __m256i p =
      _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
  const __m256i qs = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out->qs), qs);
  out->d = d;
  out->hs[0] = d * static_cast<float>(h0);
  out->hs[1] = d * static_cast<float>(h1);
  out->s = d * static_cast<float>(h0 + h1);
}
#endif

void QuantizeActivations(const float* x, int64_t n, ActBlockQ8* out) {
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* v = x + b * kQK;
#if defined(__AVX2__) && defined(__FMA__)
    QuantizeBlock(v, out + b);
#else
    float amax = 0;
    bool finite = true;
    for (int i = 0; i < kQK; ++i) {
      finite = finite && std::isfinite(v[i]);
      amax = std::max(amax, std::fabs(v[i]));
    }
    if (!finite) {
      NonFiniteBlock(out + b);
      continue;
    }
    const float d = amax / 127.0f;
    const float id = InverseScale(d);
    out[b].d = d;
    int half[2] = {0, 0};
    for (int i = 0; i < kQK; ++i) {
      out[b].qs[i] = static_cast<int8_t>(std::lrintf(v[i] * id));
      half[i / 16] += out[b].qs[i];
    }
    out[b].hs[0] = d * static_cast<float>(half[0]);
    out[b].hs[1] = d * static_cast<float>(half[1]);
    out[b].s = d * static_cast<float>(half[0] + half[1]);
#endif
  }
}

#if !(defined(__AVX2__) && defined(__FMA__) && defined(__F16C__))
// 32 int8 weights of block b of a Q8_0 / Q4_0 row, and the block's scale.
static inline void LoadWeightBlock(GgmlType type, const uint8_t* row, int64_t b, int8_t* q,
                                   float* d) {
  if (type == GgmlType::kQ8_0) {
    const auto* blk = reinterpret_cast<const BlockQ8_0*>(row) + b;
    std::memcpy(q, blk->qs, 32);
    *d = HalfToFloat(blk->d);
  } else {
    const auto* blk = reinterpret_cast<const BlockQ4_0*>(row) + b;
    for (int i = 0; i < 16; ++i) {
      q[i] = static_cast<int8_t>((blk->qs[i] & 0xf) - 8);
      q[i + 16] = static_cast<int8_t>((blk->qs[i] >> 4) - 8);
    }
    *d = HalfToFloat(blk->d);
  }
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
static inline __m256i LoadX(const ActBlockQ8& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// 8 int32 partial sums of the 32 products of two int8 blocks (|w| <= 127, never -128; lanes 0-3
// cover values 0-15, lanes 4-7 values 16-31): one VNNI dpbusd where the CPU has it, else
// maddubs + madd.
static inline __m256i DotI8Lanes(__m256i w, __m256i x) {
  const __m256i aw = _mm256_sign_epi8(w, w);  // |w|
  const __m256i sx = _mm256_sign_epi8(x, w);  // x with w's sign
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
#endif
}

template <GgmlType kType>
static inline __m256i LoadWeightBlockVec(const uint8_t* row, int64_t b, float* d) {
  if constexpr (kType == GgmlType::kQ8_0) {
    const auto* blk = reinterpret_cast<const BlockQ8_0*>(row) + b;
    *d = _cvtsh_ss(blk->d);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs));
  } else {
    const auto* blk = reinterpret_cast<const BlockQ4_0*>(row) + b;
    *d = _cvtsh_ss(blk->d);
    const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
    return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
  }
}

// One weight row against kNt activation rows (x[t] = row t's blocks). The accumulators are
// locals indexed by compile-time constants, so they stay in registers (a runtime token count
// put them on the stack: a store-to-load round trip per block, which bounded the old kernel at
// ~12 GB/s of Q4_0 on 2 cores). One token: two accumulators over alternating blocks, so the
// FMA latency chain does not bound the loop either.
template <GgmlType kType, int kNt>
static inline void RowDotsInt8(const uint8_t* row, const ActBlockQ8* const* x, int64_t nb,
                               float* res) {
  if constexpr (kNt == 1) {
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    const ActBlockQ8* x0 = x[0];
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      float d0, d1;
      const __m256i w0 = LoadWeightBlockVec<kType>(row, b, &d0);
      const __m256i w1 = LoadWeightBlockVec<kType>(row, b + 1, &d1);
      const __m256i p0 = DotI8Lanes(w0, LoadX(x0[b]));
      const __m256i p1 = DotI8Lanes(w1, LoadX(x0[b + 1]));
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(d0 * x0[b].d), a0);
      a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(d1 * x0[b + 1].d), a1);
    }
    for (; b < nb; ++b) {
      float d0;
      const __m256i w0 = LoadWeightBlockVec<kType>(row, b, &d0);
      const __m256i p0 = DotI8Lanes(w0, LoadX(x0[b]));
      a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(d0 * x0[b].d), a0);
    }
    res[0] = Hsum(_mm256_add_ps(a0, a1));
  } else {
    __m256 acc[kNt];
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      float dw;
      const __m256i wv = LoadWeightBlockVec<kType>(row, b, &dw);
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const __m256i p = DotI8Lanes(wv, LoadX(x[t][b]));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * x[t][b].d), acc[t]);
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) res[t] = Hsum(acc[t]);
  }
}

// out[j * out_stride + r] for rows [row_begin, row_end) and every activation row j:
// dots(row, nt, x, res) fills res[0..nt) for one weight row against a tile of nt rows.
template <typename RowDots>
static void ForRowsAndTiles(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out,
                            int64_t out_stride, int64_t row_begin, int64_t row_end,
                            RowDots&& dots) {
  const int64_t nb = w.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = base + r * w.row_bytes;
    ForTokenTiles(xq, nb, m, [&](auto nt, int j, const ActBlockQ8* const* x) {
      float res[4];
      dots(row, nt, x, res);
      for (int t = 0; t < decltype(nt)::value; ++t)
        out[static_cast<int64_t>(j + t) * out_stride + r] = res[t];
    });
  }
}

template <GgmlType kType>
static void MatMulRowsInt8Q(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out,
                            int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t nb = w.cols / kQK;
  ForRowsAndTiles(w, xq, m, out, out_stride, row_begin, row_end,
                  [&](const uint8_t* row, auto nt, const ActBlockQ8* const* x, float* res) {
                    RowDotsInt8<kType, decltype(nt)::value>(row, x, nb, res);
                  });
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)

// Q4_K / Q5_K: sub-block j of a super-block is one activation block; weights 0..31 unsigned,
// x = d * sc * q - dmin * m, so dot = d * sc * dx * sum(q * xq) - dmin * m * (dx * sum(xq)).
template <int kNt>
__attribute__((always_inline)) static inline void SuperBlockQ45K(bool five, const uint8_t* blk,
                                                                 const ActBlockQ8* const* x,
                                                                 __m256* acc, float* mins) {
  uint16_t dh, mh;
  std::memcpy(&dh, blk, 2);
  std::memcpy(&mh, blk + 2, 2);
  const float d = _cvtsh_ss(dh), dmin = _cvtsh_ss(mh);
  const uint8_t* scales = blk + 4;
  const uint8_t* qs = blk + (five ? 48 : 16);
  const __m256i nib = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
  const __m256i h = five ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16))
                         : _mm256_setzero_si256();
  for (int c = 0; c < 4; ++c) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
    __m256i q[2] = {_mm256_and_si256(raw, nib), _mm256_and_si256(_mm256_srli_epi16(raw, 4), nib)};
    for (int k = 0; k < 2; ++k) {
      if (five) {
        const __m256i bit = _mm256_and_si256(_mm256_srli_epi16(h, 2 * c + k), one);
        q[k] = _mm256_or_si256(q[k], _mm256_slli_epi16(bit, 4));
      }
      int sc, mn;
      ScaleMinK4(2 * c + k, scales, &sc, &mn);
      const float ds = d * static_cast<float>(sc), dm = dmin * static_cast<float>(mn);
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const ActBlockQ8& xb = x[t][2 * c + k];
        const __m256i p = DotI8Lanes(q[k], LoadX(xb));
        __m256& a = acc[k * kNt + t];  // two accumulator chains: FMA latency is not the bound
        a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ds * xb.d), a);
        mins[t] += dm * xb.s;
      }
    }
  }
}

// Q6_K: 6-bit weights minus 32, one int8 scale per 16 values (two per activation block).
template <int kNt>
__attribute__((always_inline)) static inline void SuperBlockQ6K(const uint8_t* blk,
                                                                const ActBlockQ8* const* x,
                                                                __m256* acc) {
  const auto* b = reinterpret_cast<const BlockQ6_K*>(blk);
  const float d = _cvtsh_ss(b->d);
  const __m256i nib = _mm256_set1_epi8(0x0f), two = _mm256_set1_epi8(3);
  const __m256i off = _mm256_set1_epi8(32);
  for (int half = 0; half < 2; ++half) {
    const auto* ql = reinterpret_cast<const __m256i*>(b->ql + 64 * half);
    const __m256i a = _mm256_loadu_si256(ql), c = _mm256_loadu_si256(ql + 1);
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b->qh + 32 * half));
    const __m256i lo[4] = {_mm256_and_si256(a, nib), _mm256_and_si256(c, nib),
                           _mm256_and_si256(_mm256_srli_epi16(a, 4), nib),
                           _mm256_and_si256(_mm256_srli_epi16(c, 4), nib)};
    for (int g = 0; g < 4; ++g) {
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * g), two);
      const __m256i q = _mm256_sub_epi8(_mm256_or_si256(lo[g], _mm256_slli_epi16(hi, 4)), off);
      // The two 16-value scales go into the pair sums' madd (int16 lanes 0-7: values 0-15,
      // lanes 8-15: values 16-31): |2 * 32 * 127 * 127| fits int32, and no float multiply.
      const int8_t* sc = b->scales + 8 * half + 2 * g;
      const __m256i sc16 = _mm256_set_m128i(_mm_set1_epi16(sc[1]), _mm_set1_epi16(sc[0]));
      const __m256i aq = _mm256_sign_epi8(q, q);
#pragma GCC unroll 4
      for (int t = 0; t < kNt; ++t) {
        const ActBlockQ8& xb = x[t][4 * half + g];
        const __m256i p16 = _mm256_maddubs_epi16(aq, _mm256_sign_epi8(LoadX(xb), q));
        const __m256i p = _mm256_madd_epi16(p16, sc16);
        __m256& a = acc[(g & 1) * kNt + t];  // two accumulator chains, as in SuperBlockQ45K
        a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(d * xb.d), a);
      }
    }
  }
}

// One Q4_K / Q5_K / Q6_K row against kNt activation rows; accumulators in registers (see
// RowDotsInt8).
template <GgmlType kType, int kNt>
static void RowDotsInt8K(const uint8_t* row, const ActBlockQ8* const* xrows, int64_t nsb,
                         int64_t sb_bytes, float* res) {
  __m256 acc[2 * kNt];  // [chain][token]
  float mins[kNt];
#pragma GCC unroll 8
  for (int t = 0; t < 2 * kNt; ++t) acc[t] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) mins[t] = 0;
  for (int64_t sb = 0; sb < nsb; ++sb) {
    const ActBlockQ8* x[kNt];
#pragma GCC unroll 4
    for (int t = 0; t < kNt; ++t) x[t] = xrows[t] + sb * (kQK_K / kQK);
    if constexpr (kType == GgmlType::kQ6_K) {
      SuperBlockQ6K<kNt>(row + sb * sb_bytes, x, acc);
    } else {
      SuperBlockQ45K<kNt>(kType == GgmlType::kQ5_K, row + sb * sb_bytes, x, acc, mins);
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < kNt; ++t) res[t] = Hsum(_mm256_add_ps(acc[t], acc[kNt + t])) - mins[t];
}

// Rows of a Q4_K / Q5_K / Q6_K matrix against up to 4 quantized activation rows at a time.
template <GgmlType kType>
static void MatMulRowsInt8K(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out,
                            int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t nsb = w.cols / kQK_K, sb_bytes = w.row_bytes / nsb;
  ForRowsAndTiles(w, xq, m, out, out_stride, row_begin, row_end,
                  [&](const uint8_t* row, auto nt, const ActBlockQ8* const* x, float* res) {
                    RowDotsInt8K<kType, decltype(nt)::value>(row, x, nsb, sb_bytes, res);
                  });
}
#endif

bool Int8Supported(GgmlType type) {
  if (type == GgmlType::kQ8_0 || type == GgmlType::kQ4_0) return true;
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  return type == GgmlType::kQ4_K || type == GgmlType::kQ5_K || type == GgmlType::kQ6_K;
#else
  return false;
#endif
}

void MatMulRowsInt8(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out,
                    int64_t out_stride, int64_t row_begin, int64_t row_end) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (w.type == GgmlType::kQ4_K) {
    MatMulRowsInt8K<GgmlType::kQ4_K>(w, xq, m, out, out_stride, row_begin, row_end);
  } else if (w.type == GgmlType::kQ5_K) {
    MatMulRowsInt8K<GgmlType::kQ5_K>(w, xq, m, out, out_stride, row_begin, row_end);
  } else if (w.type == GgmlType::kQ6_K) {
    MatMulRowsInt8K<GgmlType::kQ6_K>(w, xq, m, out, out_stride, row_begin, row_end);
  } else if (w.type == GgmlType::kQ8_0) {
    MatMulRowsInt8Q<GgmlType::kQ8_0>(w, xq, m, out, out_stride, row_begin, row_end);
  } else {
    MatMulRowsInt8Q<GgmlType::kQ4_0>(w, xq, m, out, out_stride, row_begin, row_end);
  }
#else
  const int64_t nb = w.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = base + r * w.row_bytes;
    for (int j = 0; j < m; j += 4) {
      const int nt = std::min(4, m - j);
      float res[4] = {0, 0, 0, 0};
      for (int64_t b = 0; b < nb; ++b) {
        int8_t q[32];
        float dw;
        LoadWeightBlock(w.type, row, b, q, &dw);
        for (int t = 0; t < nt; ++t) {
          const ActBlockQ8& xb = xq[(j + t) * nb + b];
          int32_t sum = 0;
          for (int i = 0; i < 32; ++i) sum += q[i] * xb.qs[i];
          res[t] += dw * xb.d * static_cast<float>(sum);
        }
      }
      for (int t = 0; t < nt; ++t) out[static_cast<int64_t>(j + t) * out_stride + r] = res[t];
    }
  }
#endif
}

}  // namespace chorus::cpu

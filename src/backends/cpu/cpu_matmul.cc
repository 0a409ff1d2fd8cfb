// CPU matmul kernels: out = x * W^T with W in F32, F16, BF16, Q8_0 or Q4_0. Each weight row is
// dequantized once into a scratch row (unless F32) and dotted with up to 4 input vectors at a
// time, so a batch reads the weights once. AVX2/FMA/F16C when the compiler targets them.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "chorus/backends/cpu_backend.h"

namespace chorus::cpu {

#if defined(__AVX2__) && defined(__FMA__)
static inline float Hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_shuffle_ps(lo, lo, 0x55));
  return _mm_cvtss_f32(lo);
}
#endif

float DotF32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  sum = Hsum(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
// 6-bit scale and min of sub-block j of a Q4_K / Q5_K super-block.
static inline void ScaleMinK4(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// 8 unsigned bytes (as int32 lanes) times d minus mn.
static inline void Store8(float* o, __m256i q, float d, float mn) {
  _mm256_storeu_ps(o, _mm256_fmsub_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(d),
                                      _mm256_set1_ps(mn)));
}

// Q4_K / Q5_K super-blocks: per 64 values, 32 bytes of nibbles (low: sub-block 2c, high: 2c+1),
// Q5_K's fifth bits from qh (bit 2c / 2c+1 of byte l).
static void DequantizeQ45K(GgmlType type, const uint8_t* src, float* dst, int64_t n) {
  const bool five = type == GgmlType::kQ5_K;
  const int64_t bytes = five ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const uint8_t* blk = src + b * bytes;
    uint16_t dh, mh;
    std::memcpy(&dh, blk, 2);
    std::memcpy(&mh, blk + 2, 2);
    const float d = _cvtsh_ss(dh), dmin = _cvtsh_ss(mh);
    const uint8_t* scales = blk + 4;
    const uint8_t* qh = blk + 16;
    const uint8_t* qs = blk + (five ? 48 : 16);
    float* o = dst + b * kQK_K;
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      ScaleMinK4(2 * c, scales, &sc0, &m0);
      ScaleMinK4(2 * c + 1, scales, &sc1, &m1);
      for (int l = 0; l < 32; l += 8) {
        const __m256i raw = _mm256_cvtepu8_epi32(
            _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + c * 32 + l)));
        __m256i lo = _mm256_and_si256(raw, _mm256_set1_epi32(0xf));
        __m256i hi = _mm256_srli_epi32(raw, 4);
        if (five) {
          const __m256i h = _mm256_cvtepu8_epi32(
              _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qh + l)));
          const __m256i one = _mm256_set1_epi32(1);
          lo = _mm256_or_si256(
              lo, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2 * c), one), 4));
          hi = _mm256_or_si256(
              hi, _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2 * c + 1), one), 4));
        }
        Store8(o + c * 64 + l, lo, d * sc0, dmin * m0);
        Store8(o + c * 64 + 32 + l, hi, d * sc1, dmin * m1);
      }
    }
  }
}

// Q6_K super-blocks: two halves of 128 values, each 64 bytes of low nibbles, 32 bytes of
// 2-bit highs, 8 int8 scales (one per 16 values); q - 32.
static void DequantizeQ6K(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t b = 0; b < n / kQK_K; ++b) {
    const auto* blk = reinterpret_cast<const BlockQ6_K*>(src + b * sizeof(BlockQ6_K));
    const float d = _cvtsh_ss(blk->d);
    for (int half = 0; half < 2; ++half) {
      const uint8_t* ql = blk->ql + half * 64;
      const uint8_t* qh = blk->qh + half * 32;
      const int8_t* sc = blk->scales + half * 8;
      float* o = dst + b * kQK_K + half * 128;
      for (int l = 0; l < 32; l += 8) {
        auto load8 = [](const uint8_t* p) {
          return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
        };
        const __m256i a = load8(ql + l), c = load8(ql + l + 32), h = load8(qh + l);
        const __m256i m4 = _mm256_set1_epi32(0xf), m2 = _mm256_set1_epi32(3);
        const __m256i q[4] = {
            _mm256_or_si256(_mm256_and_si256(a, m4), _mm256_slli_epi32(_mm256_and_si256(h, m2), 4)),
            _mm256_or_si256(_mm256_and_si256(c, m4),
                            _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 2), m2), 4)),
            _mm256_or_si256(_mm256_srli_epi32(a, 4),
                            _mm256_slli_epi32(_mm256_and_si256(_mm256_srli_epi32(h, 4), m2), 4)),
            _mm256_or_si256(_mm256_srli_epi32(c, 4),
                            _mm256_slli_epi32(_mm256_srli_epi32(h, 6), 4))};
        for (int g = 0; g < 4; ++g) {
          const float dg = d * static_cast<float>(sc[l / 16 + 2 * g]);
          const __m256i centred = _mm256_sub_epi32(q[g], _mm256_set1_epi32(32));
          _mm256_storeu_ps(o + 32 * g + l,
                           _mm256_mul_ps(_mm256_cvtepi32_ps(centred), _mm256_set1_ps(dg)));
        }
      }
    }
  }
}
#endif

void DequantizeRowFast(GgmlType type, const void* src, float* dst, int64_t n) {
#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
  if (type == GgmlType::kQ4_K || type == GgmlType::kQ5_K) {
    DequantizeQ45K(type, static_cast<const uint8_t*>(src), dst, n);
    return;
  }
  if (type == GgmlType::kQ6_K) {
    DequantizeQ6K(static_cast<const uint8_t*>(src), dst, n);
    return;
  }
#endif
#if defined(__AVX2__) && defined(__F16C__)
  switch (type) {
    case GgmlType::kF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(
                                      reinterpret_cast<const __m128i*>(in + i))));
      }
      for (; i < n; ++i) dst[i] = HalfToFloat(in[i]);
      return;
    }
    case GgmlType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(src);
      int64_t i = 0;
      for (; i + 8 <= n; i += 8) {
        const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(
            reinterpret_cast<const __m128i*>(in + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)));
      }
      for (; i < n; ++i) dst[i] = Bf16ToFloat(in[i]);
      return;
    }
    case GgmlType::kQ8_0: {
      const auto* in = static_cast<const BlockQ8_0*>(src);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(in[b].d));
        for (int k = 0; k < 4; ++k) {
          const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(in[b].qs + 8 * k));
          const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
          _mm256_storeu_ps(dst + b * kQK + 8 * k, _mm256_mul_ps(f, d));
        }
      }
      return;
    }
    case GgmlType::kQ4_0: {
      const auto* in = static_cast<const BlockQ4_0*>(src);
      const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
      for (int64_t b = 0; b < n / kQK; ++b) {
        const __m256 d = _mm256_set1_ps(_cvtsh_ss(in[b].d));
        const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in[b].qs));
        const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, mask), eight);
        const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight);
        float* o = dst + b * kQK;
        _mm256_storeu_ps(o, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(
                                    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), d));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(
                                     _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), d));
      }
      return;
    }
    default:
      break;
  }
#endif
  DequantizeRow(type, src, dst, n);
}

// Register-tiled microkernel: R weight rows x T token rows, R*T accumulators, so each loaded
// vector feeds several FMAs (the 1x4 Dot4 was load-bound). AVX-512 when available, else AVX2.
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int kLanes = 16;
static inline Vec VLoad(const float* p) { return _mm512_loadu_ps(p); }
static inline Vec VZero() { return _mm512_setzero_ps(); }
static inline Vec VFma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
static inline float VSum(Vec v) { return _mm512_reduce_add_ps(v); }
#define CHORUS_HAVE_VEC 1
#elif defined(__AVX2__) && defined(__FMA__)
using Vec = __m256;
constexpr int kLanes = 8;
static inline Vec VLoad(const float* p) { return _mm256_loadu_ps(p); }
static inline Vec VZero() { return _mm256_setzero_ps(); }
static inline Vec VFma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
static inline float VSum(Vec v) { return Hsum(v); }
#define CHORUS_HAVE_VEC 1
#endif

template <int R, int T>
static void MicroKernel(const float* const* w, const float* const* x, int64_t n, float* res) {
  int64_t i = 0;
  float tail[R][T] = {};
#ifdef CHORUS_HAVE_VEC
  Vec acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = VZero();
  for (; i + kLanes <= n; i += kLanes) {
    Vec wv[R];
    for (int r = 0; r < R; ++r) wv[r] = VLoad(w[r] + i);
    for (int t = 0; t < T; ++t) {
      const Vec xv = VLoad(x[t] + i);
      for (int r = 0; r < R; ++r) acc[r][t] = VFma(wv[r], xv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) tail[r][t] = VSum(acc[r][t]);
#endif
  for (; i < n; ++i) {
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) tail[r][t] += w[r][i] * x[t][i];
  }
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) res[r * 4 + t] = tail[r][t];
}

template <int R>
static void MicroKernelRows(const float* const* w, const float* const* x, int nt, int64_t n, float* res) {
  switch (nt) {
    case 1: MicroKernel<R, 1>(w, x, n, res); break;
    case 2: MicroKernel<R, 2>(w, x, n, res); break;
    case 3: MicroKernel<R, 3>(w, x, n, res); break;
    default: MicroKernel<R, 4>(w, x, n, res); break;
  }
}

void MatMulRows(const WeightTensor& w, const float* x, int m, float* out, int64_t out_stride,
                int64_t row_begin, int64_t row_end, float* scratch) {
  constexpr int kRows = 4;
  const int64_t n = w.cols;
  const auto* base = static_cast<const uint8_t*>(w.data);
  if (m == 1 && w.type == GgmlType::kF32) {
    // One F32 row at a time streams best for a single token (measured: the 4-row tile is ~15%
    // slower here, and 40% faster for prefill and multi-agent decode).
    for (int64_t r = row_begin; r < row_end; ++r) {
      out[r] = DotF32(reinterpret_cast<const float*>(base + r * w.row_bytes), x, n);
    }
    return;
  }
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kRows) {
    const int nr = static_cast<int>(std::min<int64_t>(kRows, row_end - r0));
    const float* wr[kRows];
    for (int r = 0; r < nr; ++r) {
      if (w.type == GgmlType::kF32) {
        wr[r] = reinterpret_cast<const float*>(base + (r0 + r) * w.row_bytes);
      } else {
        DequantizeRowFast(w.type, base + (r0 + r) * w.row_bytes, scratch + r * n, n);
        wr[r] = scratch + r * n;
      }
    }
    for (int j = 0; j < m; j += 4) {
      const int nt = std::min(4, m - j);
      const float* xs[4];
      for (int t = 0; t < nt; ++t) xs[t] = x + static_cast<int64_t>(j + t) * n;
      float res[kRows * 4];
      if (nr == kRows) {
        MicroKernelRows<kRows>(wr, xs, nt, n, res);
      } else {
        for (int r = 0; r < nr; ++r) MicroKernelRows<1>(wr + r, xs, nt, n, res + r * 4);
      }
      for (int r = 0; r < nr; ++r) {
        for (int t = 0; t < nt; ++t) out[static_cast<int64_t>(j + t) * out_stride + r0 + r] = res[r * 4 + t];
      }
    }
  }
}

void QuantizeActivations(const float* x, int64_t n, ActBlockQ8* out) {
  for (int64_t b = 0; b < n / kQK; ++b) {
    const float* v = x + b * kQK;
    float amax = 0;
    for (int i = 0; i < kQK; ++i) amax = std::max(amax, std::fabs(v[i]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    out[b].d = d;
    int sum = 0;
    for (int i = 0; i < kQK; ++i) {
      out[b].qs[i] = static_cast<int8_t>(std::lrintf(v[i] * id));
      sum += out[b].qs[i];
    }
    out[b].s = d * static_cast<float>(sum);
  }
}

// 32 int8 weights of block b of a Q8_0 / Q4_0 row, and the block's scale.
static inline void LoadWeightBlock(GgmlType type, const uint8_t* row, int64_t b, int8_t* q, float* d) {
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

#if defined(__AVX2__) && defined(__FMA__)
// Sum of the 32 products of two int8 blocks, as 8 partial int32 sums converted to float.
static inline __m256 BlockDotI8(__m256i w, __m256i x) {
  const __m256i aw = _mm256_sign_epi8(w, w);  // |w| (weights never hold -128)
  const __m256i sx = _mm256_sign_epi8(x, w);  // x with w's sign
  const __m256i p16 = _mm256_maddubs_epi16(aw, sx);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

static inline __m256i LoadWeightBlockVec(GgmlType type, const uint8_t* row, int64_t b, float* d) {
  if (type == GgmlType::kQ8_0) {
    const auto* blk = reinterpret_cast<const BlockQ8_0*>(row) + b;
    *d = _cvtsh_ss(blk->d);
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs));
  }
  const auto* blk = reinterpret_cast<const BlockQ4_0*>(row) + b;
  *d = _cvtsh_ss(blk->d);
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->qs));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(raw, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
// 8 int32 partial sums of 32 products of signed weights (|w| <= 63) and signed activations:
// lanes 0-3 cover values 0-15, lanes 4-7 values 16-31.
static inline __m256i DotI8Lanes(__m256i w, __m256i x) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}
static inline __m256i LoadX(const ActBlockQ8& b) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
}

// Q4_K / Q5_K: sub-block j of a super-block is one activation block; weights 0..31 unsigned,
// x = d * sc * q - dmin * m, so dot = d * sc * dx * sum(q * xq) - dmin * m * (dx * sum(xq)).
static void SuperBlockQ45K(bool five, const uint8_t* blk, const ActBlockQ8* const* x, int nt,
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
      for (int t = 0; t < nt; ++t) {
        const ActBlockQ8& xb = x[t][2 * c + k];
        const __m256i p = DotI8Lanes(q[k], LoadX(xb));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(ds * xb.d), acc[t]);
        mins[t] += dm * xb.s;
      }
    }
  }
}

// Q6_K: 6-bit weights minus 32, one int8 scale per 16 values (two per activation block).
static void SuperBlockQ6K(const uint8_t* blk, const ActBlockQ8* const* x, int nt, __m256* acc) {
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
      const int8_t* sc = b->scales + 8 * half + 2 * g;
      const __m256 scv = _mm256_setr_ps(sc[0], sc[0], sc[0], sc[0], sc[1], sc[1], sc[1], sc[1]);
      for (int t = 0; t < nt; ++t) {
        const ActBlockQ8& xb = x[t][4 * half + g];
        const __m256i p = DotI8Lanes(q, LoadX(xb));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(scv, _mm256_set1_ps(d * xb.d)),
                                 acc[t]);
      }
    }
  }
}

// Rows of a Q4_K / Q5_K / Q6_K matrix against up to 4 quantized activation rows at a time.
static void MatMulRowsInt8K(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out,
                            int64_t out_stride, int64_t row_begin, int64_t row_end) {
  const int64_t nb = w.cols / kQK, nsb = w.cols / kQK_K;
  const int64_t sb_bytes = w.row_bytes / nsb;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = base + r * w.row_bytes;
    for (int j = 0; j < m; j += 4) {
      const int nt = std::min(4, m - j);
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                       _mm256_setzero_ps()};
      float mins[4] = {0, 0, 0, 0};
      for (int64_t sb = 0; sb < nsb; ++sb) {
        const ActBlockQ8* x[4];
        for (int t = 0; t < nt; ++t) x[t] = xq + (j + t) * nb + sb * (kQK_K / kQK);
        if (w.type == GgmlType::kQ6_K) {
          SuperBlockQ6K(row + sb * sb_bytes, x, nt, acc);
        } else {
          SuperBlockQ45K(w.type == GgmlType::kQ5_K, row + sb * sb_bytes, x, nt, acc, mins);
        }
      }
      for (int t = 0; t < nt; ++t) {
        out[static_cast<int64_t>(j + t) * out_stride + r] = Hsum(acc[t]) - mins[t];
      }
    }
  }
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

void MatMulRowsInt8(const WeightTensor& w, const ActBlockQ8* xq, int m, float* out, int64_t out_stride,
                    int64_t row_begin, int64_t row_end) {
#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
  if (w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ5_K || w.type == GgmlType::kQ6_K) {
    MatMulRowsInt8K(w, xq, m, out, out_stride, row_begin, row_end);
    return;
  }
#endif
  const int64_t nb = w.cols / kQK;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* row = base + r * w.row_bytes;
    for (int j = 0; j < m; j += 4) {
      const int nt = std::min(4, m - j);
      float res[4] = {0, 0, 0, 0};
#if defined(__AVX2__) && defined(__FMA__)
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t b = 0; b < nb; ++b) {
        float dw;
        const __m256i wv = LoadWeightBlockVec(w.type, row, b, &dw);
        for (int t = 0; t < nt; ++t) {
          const ActBlockQ8& xb = xq[(j + t) * nb + b];
          const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xb.qs));
          acc[t] = _mm256_fmadd_ps(BlockDotI8(wv, xv), _mm256_set1_ps(dw * xb.d), acc[t]);
        }
      }
      for (int t = 0; t < nt; ++t) res[t] = Hsum(acc[t]);
#else
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
#endif
      for (int t = 0; t < nt; ++t) out[static_cast<int64_t>(j + t) * out_stride + r] = res[t];
    }
  }
}

}  // namespace chorus::cpu

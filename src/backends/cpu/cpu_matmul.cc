// CPU matmul kernels: out = x * W^T with W in F32, F16, BF16, Q8_0 or Q4_0. Each weight row is
// dequantized once into a scratch row (unless F32) and dotted with up to 4 input vectors at a
// time, so a batch reads the weights once. AVX2/FMA/F16C when the compiler targets them.
#include <immintrin.h>

#include <algorithm>

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

// out[j] = dot(w, x[j]) for j < m (m <= 4), reading w once.
static void Dot4(const float* w, const float* const* x, int m, int64_t n, float* out) {
  int64_t i = 0;
  float tail[4] = {0, 0, 0, 0};
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                   _mm256_setzero_ps()};
  if (m == 4) {
    for (; i + 8 <= n; i += 8) {
      const __m256 wv = _mm256_loadu_ps(w + i);
      acc[0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[0] + i), acc[0]);
      acc[1] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[1] + i), acc[1]);
      acc[2] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[2] + i), acc[2]);
      acc[3] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[3] + i), acc[3]);
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m256 wv = _mm256_loadu_ps(w + i);
      for (int j = 0; j < m; ++j) acc[j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[j] + i), acc[j]);
    }
  }
  for (int j = 0; j < m; ++j) tail[j] = Hsum(acc[j]);
#endif
  for (; i < n; ++i) {
    for (int j = 0; j < m; ++j) tail[j] += w[i] * x[j][i];
  }
  for (int j = 0; j < m; ++j) out[j] = tail[j];
}

void DequantizeRowFast(GgmlType type, const void* src, float* dst, int64_t n) {
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

void MatMulRows(const WeightTensor& w, const float* x, int m, float* out, int64_t out_stride,
                int64_t row_begin, int64_t row_end, float* scratch) {
  const int64_t n = w.cols;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_begin; r < row_end; ++r) {
    const float* wr;
    if (w.type == GgmlType::kF32) {
      wr = reinterpret_cast<const float*>(base + r * w.row_bytes);
    } else {
      DequantizeRowFast(w.type, base + r * w.row_bytes, scratch, n);
      wr = scratch;
    }
    for (int j = 0; j < m; j += 4) {
      const int k = std::min(4, m - j);
      const float* xs[4];
      float res[4];
      for (int t = 0; t < k; ++t) xs[t] = x + static_cast<int64_t>(j + t) * n;
      Dot4(wr, xs, k, n, res);
      for (int t = 0; t < k; ++t) out[static_cast<int64_t>(j + t) * out_stride + r] = res[t];
    }
  }
}

}  // namespace chorus::cpu

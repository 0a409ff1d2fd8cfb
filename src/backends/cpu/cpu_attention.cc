// CPU attention over the paged KV cache. One work item is one (token, KV head): the query heads
// of the GQA group that share the KV head are scored together, so each cached K and V row is read
// once per item, not once per query head; keys are walked block by block (the block table is
// read once per block, not per position); scores, softmax and the value sum are vectorized.
#include "src/backends/cpu/cpu_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "chorus/backends/cpu_backend.h"
#include "src/backends/cpu/cpu_simd.h"

namespace chorus::cpu {
namespace {

#if defined(__AVX2__) && defined(__FMA__)
// e^x for x <= 0 (scores minus their maximum), Cephes' expf polynomial: relative error ~2e-7.
inline __m256 ExpNonPositive(__m256 x) {
  x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);  // a NaN x stays NaN (maxps returns operand 2)
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

// scores[i] = exp(scores[i] - max) for i < n; returns their sum.
float SoftmaxNumerators(float* scores, int n, float max_score) {
  int i = 0;
  float sum = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 m = _mm256_set1_ps(max_score);
  __m256 s = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 e = ExpNonPositive(_mm256_sub_ps(_mm256_loadu_ps(scores + i), m));
    _mm256_storeu_ps(scores + i, e);
    s = _mm256_add_ps(s, e);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  for (float v : lanes) sum += v;
#endif
  for (; i < n; ++i) {
    scores[i] = std::exp(scores[i] - max_score);
    sum += scores[i];
  }
  return sum;
}

// o[d] += a * v[d] for d < n.
inline void Axpy(float a, const float* v, float* o, int n) {
  int d = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 av = _mm256_set1_ps(a);
  for (; d + 8 <= n; d += 8) {
    _mm256_storeu_ps(o + d, _mm256_fmadd_ps(av, _mm256_loadu_ps(v + d), _mm256_loadu_ps(o + d)));
  }
#endif
  for (; d < n; ++d) o[d] += a * v[d];
}

#if defined(__AVX2__) && defined(__FMA__)
// Head sizes 64 and 128 as compile-time constants: one query head's vector (or the output row)
// stays in registers while the keys (values) of a block stream past it.
template <int kHd>
void ScoreBlock(const float* qh, const float* k_first, int64_t k_stride, int count, float scale,
                float* scores, float* max_score) {
  __m256 qv[kHd / 8];
#pragma GCC unroll 16
  for (int i = 0; i < kHd / 8; ++i) qv[i] = _mm256_loadu_ps(qh + 8 * i);
  float mx = *max_score;
  for (int p = 0; p < count; ++p) {
    const float* k = k_first + p * k_stride;
    __m256 a0 = _mm256_mul_ps(qv[0], _mm256_loadu_ps(k));
    __m256 a1 = _mm256_mul_ps(qv[1], _mm256_loadu_ps(k + 8));
#pragma GCC unroll 16
    for (int i = 2; i < kHd / 8; i += 2) {
      a0 = _mm256_fmadd_ps(qv[i], _mm256_loadu_ps(k + 8 * i), a0);
      a1 = _mm256_fmadd_ps(qv[i + 1], _mm256_loadu_ps(k + 8 * i + 8), a1);
    }
    const float sc = Hsum(_mm256_add_ps(a0, a1)) * scale;
    scores[p] = sc;
    mx = std::max(mx, sc);
  }
  *max_score = mx;
}

template <int kHd>
void AccumulateBlock(const float* weights, const float* v_first, int64_t v_stride, int count,
                     float* o) {
  __m256 ov[kHd / 8];
#pragma GCC unroll 16
  for (int i = 0; i < kHd / 8; ++i) ov[i] = _mm256_loadu_ps(o + 8 * i);
  for (int p = 0; p < count; ++p) {
    const __m256 a = _mm256_set1_ps(weights[p]);
    const float* v = v_first + p * v_stride;
#pragma GCC unroll 16
    for (int i = 0; i < kHd / 8; ++i) ov[i] = _mm256_fmadd_ps(a, _mm256_loadu_ps(v + 8 * i), ov[i]);
  }
#pragma GCC unroll 16
  for (int i = 0; i < kHd / 8; ++i) _mm256_storeu_ps(o + 8 * i, ov[i]);
}
#endif

// Scores of query head qh against `count` keys from k_first (k_stride floats apart); keeps the
// running maximum.
void Scores(int hd, const float* qh, const float* k_first, int64_t k_stride, int count, float scale,
            float* scores, float* max_score) {
#if defined(__AVX2__) && defined(__FMA__)
  if (hd == 64) return ScoreBlock<64>(qh, k_first, k_stride, count, scale, scores, max_score);
  if (hd == 128) return ScoreBlock<128>(qh, k_first, k_stride, count, scale, scores, max_score);
#endif
  for (int p = 0; p < count; ++p) {
    scores[p] = DotF32(qh, k_first + p * k_stride, hd) * scale;
    *max_score = std::max(*max_score, scores[p]);
  }
}

// o += sum_p weights[p] * v_p over `count` values from v_first.
void Accumulate(int hd, const float* weights, const float* v_first, int64_t v_stride, int count,
                float* o) {
#if defined(__AVX2__) && defined(__FMA__)
  if (hd == 64) return AccumulateBlock<64>(weights, v_first, v_stride, count, o);
  if (hd == 128) return AccumulateBlock<128>(weights, v_first, v_stride, count, o);
#endif
  for (int p = 0; p < count; ++p) Axpy(weights[p], v_first + p * v_stride, o, hd);
}

}  // namespace

void Attention(ThreadPool& pool, const float* q, const float* k_cache, const float* v_cache,
               const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
               float* out) {
  const int group = heads / kv_heads;
  const int kv_dim = kv_heads * head_dim;
  const int bs = layout.block_size;
  const int64_t work = static_cast<int64_t>(layout.num_tokens) * kv_heads;
  int64_t cost = 0;  // dot products of q with every cached key, and the value sums
  for (int t = 0; t < layout.num_tokens; ++t) {
    cost += static_cast<int64_t>(layout.positions[t] + 1) * heads * head_dim * 2;
  }
  pool.ParallelFor(
      work,
      [&](int64_t begin, int64_t end) {
        std::vector<float> scores;  // [group][n]
        std::vector<float> max_score(group);
        for (int64_t w = begin; w < end; ++w) {
          const int t = static_cast<int>(w / kv_heads);
          const int kvh = static_cast<int>(w % kv_heads);
          const int n = layout.positions[t] + 1;
          const int32_t* table =
              layout.block_tables +
              static_cast<int64_t>(layout.seq_of_token[t]) * layout.max_blocks_per_seq;
          const int64_t first_head = static_cast<int64_t>(t) * heads + kvh * group;
          const float* qg = q + first_head * head_dim;  // the group's query heads, contiguous
          scores.resize(static_cast<size_t>(group) * n);
          std::fill(max_score.begin(), max_score.end(), -INFINITY);
          for (int p0 = 0; p0 < n; p0 += bs) {
            const int64_t base = static_cast<int64_t>(table[p0 / bs]) * bs;
            const int count = std::min(bs, n - p0);
            const float* k = k_cache + base * kv_dim + kvh * head_dim;
            for (int g = 0; g < group; ++g) {
              Scores(head_dim, qg + g * head_dim, k, kv_dim, count, scale,
                     scores.data() + static_cast<size_t>(g) * n + p0, &max_score[g]);
            }
          }
          for (int g = 0; g < group; ++g) {  // normalized weights in place of the scores
            float* sg = scores.data() + static_cast<size_t>(g) * n;
            const float inv = 1.0f / SoftmaxNumerators(sg, n, max_score[g]);
            for (int p = 0; p < n; ++p) sg[p] *= inv;
          }
          float* og = out + first_head * head_dim;
          std::fill(og, og + static_cast<int64_t>(group) * head_dim, 0.0f);
          for (int p0 = 0; p0 < n; p0 += bs) {
            const int64_t base = static_cast<int64_t>(table[p0 / bs]) * bs;
            const int count = std::min(bs, n - p0);
            const float* v = v_cache + base * kv_dim + kvh * head_dim;
            for (int g = 0; g < group; ++g) {
              Accumulate(head_dim, scores.data() + static_cast<size_t>(g) * n + p0, v, kv_dim,
                         count, og + g * head_dim);
            }
          }
        }
      },
      cost);
}

}  // namespace chorus::cpu

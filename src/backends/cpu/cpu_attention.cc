#include "src/backends/cpu/cpu_attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "chorus/backends/cpu_backend.h"

namespace chorus::cpu {

void Attention(ThreadPool& pool, const float* q, const float* k_cache, const float* v_cache,
               const AttentionLayout& layout, int heads, int kv_heads, int head_dim, float scale,
               float* out) {
  const int group = heads / kv_heads;
  const int kv_dim = kv_heads * head_dim;
  const int64_t work = static_cast<int64_t>(layout.num_tokens) * heads;
  int64_t cost = 0;  // dot products of q with every cached key, and the value sums
  for (int t = 0; t < layout.num_tokens; ++t) {
    cost += static_cast<int64_t>(layout.positions[t] + 1) * heads * head_dim * 2;
  }
  pool.ParallelFor(
      work,
      [&](int64_t begin, int64_t end) {
        std::vector<float> scores;
        for (int64_t w = begin; w < end; ++w) {
          const int t = static_cast<int>(w / heads);
          const int h = static_cast<int>(w % heads);
          const int kvh = h / group;
          const int pos = layout.positions[t];
          const float* qh = q + w * head_dim;
          scores.resize(pos + 1);
          float max_score = -INFINITY;
          for (int p = 0; p <= pos; ++p) {
            const int64_t slot = CacheSlot(layout, t, p);
            scores[p] = DotF32(qh, k_cache + slot * kv_dim + kvh * head_dim, head_dim) * scale;
            max_score = std::max(max_score, scores[p]);
          }
          float sum = 0;
          for (int p = 0; p <= pos; ++p) {
            scores[p] = std::exp(scores[p] - max_score);
            sum += scores[p];
          }
          float* o = out + w * head_dim;
          std::fill(o, o + head_dim, 0.0f);
          const float inv = 1.0f / sum;
          for (int p = 0; p <= pos; ++p) {
            const float* vh = v_cache + CacheSlot(layout, t, p) * kv_dim + kvh * head_dim;
            const float a = scores[p] * inv;
            for (int d = 0; d < head_dim; ++d) o[d] += a * vh[d];
          }
        }
      },
      cost);
}

}  // namespace chorus::cpu

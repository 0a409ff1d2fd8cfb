// The CPU backend's paged attention (src/backends/cpu/cpu_attention.cc) against a naive
// double-precision softmax(q k^T * scale) v written here: GQA groups of 1, 4 and 8, head sizes 64
// and 128 (and an odd 36), blocks in a shuffled order, tokens of two sequences at different
// positions, contexts that end inside a block and beyond 4k positions.
#include "src/backends/cpu/cpu_attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "chorus/core/thread_pool.h"

namespace chorus {
namespace {

struct Case {
  int heads, kv_heads, head_dim;
  std::vector<int> positions;  // one token per entry; even entries sequence 0, odd sequence 1
};

void Check(const Case& c) {
  constexpr int kBlock = 16;
  const int max_pos = *std::max_element(c.positions.begin(), c.positions.end());
  const int blocks_per_seq = max_pos / kBlock + 1;
  const int kv_dim = c.kv_heads * c.head_dim;
  std::mt19937 rng(c.heads * 131 + c.head_dim + max_pos);
  std::uniform_real_distribution<float> dist(-1, 1);
  // Two sequences' blocks, interleaved and shuffled over the cache.
  std::vector<int32_t> slots(2 * blocks_per_seq);
  std::iota(slots.begin(), slots.end(), 0);
  std::shuffle(slots.begin(), slots.end(), rng);
  std::vector<float> k(slots.size() * kBlock * kv_dim), v(k.size());
  for (auto& x : k) x = dist(rng) * 2;
  for (auto& x : v) x = dist(rng);
  const int n = static_cast<int>(c.positions.size());
  std::vector<int32_t> seq(n);
  for (int t = 0; t < n; ++t) seq[t] = t % 2;
  std::vector<float> q(static_cast<size_t>(n) * c.heads * c.head_dim), out(q.size(), NAN);
  for (auto& x : q) x = dist(rng);
  AttentionLayout l;
  l.num_tokens = n;
  l.positions = c.positions.data();
  l.seq_of_token = seq.data();
  l.block_tables = slots.data();
  l.max_blocks_per_seq = blocks_per_seq;
  l.block_size = kBlock;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  ThreadPool pool(2);
  cpu::Attention(pool, q.data(), k.data(), v.data(), l, c.heads, c.kv_heads, c.head_dim, scale,
                 out.data());
  const int group = c.heads / c.kv_heads;
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < c.heads; ++h) {
      const float* qh = q.data() + (static_cast<size_t>(t) * c.heads + h) * c.head_dim;
      const int kvh = h / group;
      std::vector<double> s(c.positions[t] + 1);
      double mx = -1e300;
      for (int p = 0; p <= c.positions[t]; ++p) {
        const int64_t slot =
            static_cast<int64_t>(slots[seq[t] * blocks_per_seq + p / kBlock]) * kBlock + p % kBlock;
        double d = 0;
        for (int i = 0; i < c.head_dim; ++i)
          d += double{qh[i]} * k[slot * kv_dim + kvh * c.head_dim + i];
        s[p] = d * scale;
        mx = std::max(mx, s[p]);
      }
      double sum = 0;
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (int i = 0; i < c.head_dim; ++i) {
        double want = 0;
        for (int p = 0; p <= c.positions[t]; ++p) {
          const int64_t slot =
              static_cast<int64_t>(slots[seq[t] * blocks_per_seq + p / kBlock]) * kBlock +
              p % kBlock;
          want += s[p] / sum * v[slot * kv_dim + kvh * c.head_dim + i];
        }
        const float got = out[(static_cast<size_t>(t) * c.heads + h) * c.head_dim + i];
        ASSERT_NEAR(got, want, 2e-5) << "heads " << c.heads << "/" << c.kv_heads << " dim "
                                     << c.head_dim << " token " << t << " head " << h << " i " << i;
      }
    }
  }
}

TEST(CpuAttentionTest, MatchesNaiveSoftmaxOverPagedBlocks) {
  Check({4, 4, 64, {0, 5, 16, 17}});
  Check({8, 2, 64, {37, 100, 200, 15}});
  Check({32, 8, 64, {511, 300}});
  Check({16, 2, 128, {0, 1, 255, 64}});
  Check({6, 3, 36, {47, 9}});  // head size not a multiple of 8: the scalar tails
}

TEST(CpuAttentionTest, LongContextWithGqaEight) { Check({16, 2, 64, {4200, 3000}}); }

}  // namespace
}  // namespace chorus

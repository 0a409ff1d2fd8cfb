// The CUDA backend's fusion rules (chorus/backends/fusion.h) on decode-step patterns: what must
// fuse, what must not, and every condition each rule checks. No device needed: pointers are
// only compared.
#include "chorus/backends/fusion.h"

#include <gtest/gtest.h>

namespace chorus {
namespace {

constexpr int kQ8_0 = 8, kQ4_0 = 2;

// Distinct addresses standing in for device buffers.
struct Buffers {
  float x[4], x2[4], q[4], kk[4], v[4], gate[4], up[4], out[4];
  int32_t pos[4], pos2[4];
  char wq, wk, wv, wg, wu;
};

FusedWeight Weight(const void* data, int type, int64_t rows, int64_t cols) {
  return {type, rows, cols, cols / 32 * 34, data};
}

// A group staged by MatMul for its first GEMV.
StagedGemv Group(const FusedWeight& w, const float* x, int n, float* out) {
  StagedGemv g;
  g.count = 1;
  g.w[0] = w;
  g.out[0] = out;
  g.x = x;
  g.n = n;
  return g;
}

void Join(StagedGemv& g, const FusedWeight& w, float* out) {
  g.w[g.count] = w;
  g.out[g.count] = out;
  ++g.count;
}

TEST(FusionTest, QkvGemvsShareOneGroupOfAtMostThree) {
  Buffers b;
  const FusedWeight wq = Weight(&b.wq, kQ8_0, 2048, 2048);
  const FusedWeight wk = Weight(&b.wk, kQ8_0, 512, 2048);  // GQA: K and V are narrower
  const FusedWeight wv = Weight(&b.wv, kQ8_0, 512, 2048);
  StagedGemv g = Group(wq, b.x, 1, b.q);
  EXPECT_TRUE(GemvJoinsGroup(g, wk, b.x, 1, /*fuse=*/true));
  Join(g, wk, b.kk);
  EXPECT_TRUE(GemvJoinsGroup(g, wv, b.x, 1, true));
  Join(g, wv, b.v);
  EXPECT_EQ(g.count, kMaxFusedGemvs);
  // A full group takes no more, however well the next GEMV matches.
  EXPECT_FALSE(GemvJoinsGroup(g, wv, b.x, 1, true));
}

TEST(FusionTest, GemvStartsANewGroupWhenAnythingDiffers) {
  Buffers b;
  const FusedWeight wg = Weight(&b.wg, kQ8_0, 8192, 2048);
  const StagedGemv g = Group(wg, b.x, 2, b.gate);
  const FusedWeight wu = Weight(&b.wu, kQ8_0, 8192, 2048);
  EXPECT_TRUE(GemvJoinsGroup(g, wu, b.x, 2, true));
  EXPECT_FALSE(GemvJoinsGroup(g, wu, b.x, 2, /*fuse=*/false));
  EXPECT_FALSE(GemvJoinsGroup(g, wu, b.x2, 2, true)) << "another input";
  EXPECT_FALSE(GemvJoinsGroup(g, wu, b.x, 1, true)) << "another row count";
  EXPECT_FALSE(GemvJoinsGroup(g, Weight(&b.wu, kQ4_0, 8192, 2048), b.x, 2, true))
      << "another weight type";
  EXPECT_FALSE(GemvJoinsGroup(g, Weight(&b.wu, kQ8_0, 8192, 4096), b.x, 2, true))
      << "another width";
  // Output rows may differ (Q and K): only the input side must match.
  EXPECT_TRUE(GemvJoinsGroup(g, Weight(&b.wu, kQ8_0, 100, 2048), b.x, 2, true));
  // Nothing staged: nothing to join, even for an all-zero weight at a null input.
  EXPECT_FALSE(GemvJoinsGroup(StagedGemv{}, FusedWeight{}, nullptr, 0, true));
}

TEST(FusionTest, SwiGluFusesIntoTheGateUpPairThatFeedsIt) {
  Buffers b;
  const int d = 8192, n = 1;
  StagedGemv g = Group(Weight(&b.wg, kQ8_0, d, 2048), b.x, n, b.gate);
  Join(g, Weight(&b.wu, kQ8_0, d, 2048), b.up);
  EXPECT_TRUE(SwiGluFusesIntoGemv(g, b.gate, b.up, n, d, b.gate));

  EXPECT_FALSE(SwiGluFusesIntoGemv(g, b.gate, b.up, n, d, b.out)) << "not in place";
  EXPECT_FALSE(SwiGluFusesIntoGemv(g, b.up, b.gate, n, d, b.up)) << "gate and up swapped";
  EXPECT_FALSE(SwiGluFusesIntoGemv(g, b.gate, b.v, n, d, b.gate)) << "up from elsewhere";
  EXPECT_FALSE(SwiGluFusesIntoGemv(g, b.gate, b.up, 2, d, b.gate)) << "another row count";
  EXPECT_FALSE(SwiGluFusesIntoGemv(g, b.gate, b.up, n, d / 2, b.gate)) << "another width";

  StagedGemv one = Group(Weight(&b.wg, kQ8_0, d, 2048), b.x, n, b.gate);
  EXPECT_FALSE(SwiGluFusesIntoGemv(one, b.gate, b.up, n, d, b.gate)) << "gate alone";
  StagedGemv three = g;
  Join(three, Weight(&b.wv, kQ8_0, d, 2048), b.v);
  EXPECT_FALSE(SwiGluFusesIntoGemv(three, b.gate, b.up, n, d, b.gate)) << "a group of three";
  EXPECT_FALSE(SwiGluFusesIntoGemv(StagedGemv{}, b.gate, b.up, n, d, b.gate)) << "none staged";
}

TEST(FusionTest, ResidualAddFusesIntoTheNormOfItsResult) {
  Buffers b;
  const int n = 2, d = 2;
  const StagedAdd add{b.x, b.v, int64_t{n} * d};
  EXPECT_TRUE(AddFusesIntoRmsNorm(add, b.x, n, d, b.out));

  EXPECT_FALSE(AddFusesIntoRmsNorm(add, b.x, n, d, b.x)) << "norm in place overwrites the sum";
  EXPECT_FALSE(AddFusesIntoRmsNorm(add, b.x2, n, d, b.out)) << "norm of another tensor";
  EXPECT_FALSE(AddFusesIntoRmsNorm(add, b.x, 1, d, b.out)) << "the add covered more rows";
  EXPECT_FALSE(AddFusesIntoRmsNorm(add, b.x, n, 4, b.out)) << "the add covered fewer values";
  EXPECT_FALSE(AddFusesIntoRmsNorm(StagedAdd{}, b.x, n, d, b.out)) << "none staged";
  // The count is n * d in 64 bits: no overflow for a long prefill of a wide model.
  const int rows = 70000, width = 40000;
  const StagedAdd big{b.x, b.v, int64_t{rows} * width};
  EXPECT_TRUE(AddFusesIntoRmsNorm(big, b.x, rows, width, b.out));
}

RopeParams Llama() { return {64, 500000.0f, 1.0f, nullptr, false}; }

StagedRope StagedQ(Buffers& b, int n) {
  StagedRope r;
  r.a = b.q;
  r.heads = 32;
  r.positions = b.pos;
  r.n = n;
  r.head_dim = 64;
  r.rope = Llama();
  return r;
}

TEST(FusionTest, RopeOfKJoinsRopeOfQ) {
  Buffers b;
  const StagedRope r = StagedQ(b, 4);
  EXPECT_TRUE(RopeJoinsPair(r, b.kk, b.pos, 4, 64, Llama()));

  EXPECT_FALSE(RopeJoinsPair(r, b.q, b.pos, 4, 64, Llama())) << "the same tensor twice";
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos2, 4, 64, Llama())) << "other positions";
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 3, 64, Llama())) << "other rows";
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 4, 128, Llama())) << "another head size";
  EXPECT_FALSE(RopeJoinsPair(StagedRope{}, b.kk, b.pos, 4, 64, Llama())) << "none staged";
  StagedRope pair = r;
  pair.b = b.kk;
  pair.heads_b = 8;
  EXPECT_FALSE(RopeJoinsPair(pair, b.v, b.pos, 4, 64, Llama())) << "a pair takes no third";
}

TEST(FusionTest, RopePairNeedsTheSameRotation) {
  Buffers b;
  const StagedRope r = StagedQ(b, 1);
  const float factors[32] = {};
  RopeParams p = Llama();
  EXPECT_TRUE(SameRope(p, Llama()));
  p.rope_dim = 32;
  EXPECT_FALSE(SameRope(p, Llama()));
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 1, 64, p));
  p = Llama();
  p.freq_base = 10000.0f;
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 1, 64, p));
  p = Llama();
  p.freq_scale = 0.25f;
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 1, 64, p));
  p = Llama();
  p.freq_factors = factors;
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 1, 64, p));
  p = Llama();
  p.halves = true;
  EXPECT_FALSE(RopeJoinsPair(r, b.kk, b.pos, 1, 64, p));
}

TEST(FusionTest, KvWriteOfRotatedKTakesTheRopePair) {
  Buffers b;
  StagedRope pair = StagedQ(b, 4);
  pair.b = b.kk;
  pair.heads_b = 8;
  const int kv_dim = 8 * 64;
  EXPECT_TRUE(RopeFusesIntoKvWrite(pair, b.kk, b.pos, 4, kv_dim));

  EXPECT_FALSE(RopeFusesIntoKvWrite(pair, b.v, b.pos, 4, kv_dim)) << "writes another K";
  EXPECT_FALSE(RopeFusesIntoKvWrite(pair, b.kk, b.pos2, 4, kv_dim)) << "other positions";
  EXPECT_FALSE(RopeFusesIntoKvWrite(pair, b.kk, b.pos, 2, kv_dim)) << "other rows";
  EXPECT_FALSE(RopeFusesIntoKvWrite(pair, b.kk, b.pos, 4, kv_dim / 2)) << "another width";
  // A lone RoPE (Q only, or K not yet joined) leaves the KV write alone, even a null K.
  const StagedRope lone = StagedQ(b, 4);
  EXPECT_FALSE(RopeFusesIntoKvWrite(lone, b.kk, b.pos, 4, kv_dim));
  EXPECT_FALSE(RopeFusesIntoKvWrite(lone, nullptr, b.pos, 4, kv_dim));
  EXPECT_FALSE(RopeFusesIntoKvWrite(StagedRope{}, nullptr, nullptr, 0, 0)) << "none staged";
}

}  // namespace
}  // namespace chorus

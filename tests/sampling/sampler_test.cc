#include "chorus/sampling/sampler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

namespace chorus {
namespace {

std::vector<float> Logits() { return {0.1f, 2.0f, -1.0f, 1.5f, 0.0f, 1.9f}; }

TEST(SamplerTest, GreedyPicksArgmaxWithItsLogprob) {
  SamplingParams p;
  p.temperature = 0;
  Sampler s(p);
  const auto logits = Logits();
  const SampledToken t = s.Sample(logits, {});
  EXPECT_EQ(t.token, 1);
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l));
  EXPECT_NEAR(t.logprob, 2.0 - std::log(z), 1e-6);
}

TEST(SamplerTest, SameSeedSameTokensDifferentSeedDifferent) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  const auto logits = Logits();
  auto draw = [&](uint64_t seed) {
    SamplingParams q = p;
    q.seed = seed;
    Sampler s(q);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(s.Sample(logits, {}).token);
    return out;
  };
  EXPECT_EQ(draw(1234), draw(1234));
  EXPECT_NE(draw(1234), draw(1235));
}

TEST(SamplerTest, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.2f)};
  SamplingParams p;
  p.seed = 7;
  Sampler s(p);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) counts[s.Sample(logits, {}).token]++;
  EXPECT_NEAR(counts[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(counts[1] / double(n), 0.3, 0.02);
  EXPECT_NEAR(counts[2] / double(n), 0.2, 0.02);
}

TEST(SamplerTest, TopKTopPMinPRestrictTheCandidates) {
  const auto logits = Logits();  // order by logit: 1, 5, 3, 0, 4, 2
  auto support = [&](SamplingParams p) {
    std::map<int32_t, int> seen;
    for (uint64_t seed = 0; seed < 400; ++seed) {
      p.seed = seed;
      Sampler s(p);
      seen[s.Sample(logits, {}).token]++;
    }
    std::vector<int32_t> ids;
    for (auto& [id, c] : seen) ids.push_back(id);
    return ids;
  };
  SamplingParams p;
  p.top_k = 2;
  EXPECT_EQ(support(p), (std::vector<int32_t>{1, 5}));
  p = {};
  p.top_k = 1;
  EXPECT_EQ(support(p), (std::vector<int32_t>{1}));
  p = {};
  p.top_p = 0.01f;
  EXPECT_EQ(support(p), (std::vector<int32_t>{1}));
  p = {};
  p.min_p = 0.55f;  // keeps tokens with p >= 0.55 * p(1): ids 1, 5 (e^-0.1), 3 (e^-0.5 = 0.61)
  EXPECT_EQ(support(p), (std::vector<int32_t>{1, 3, 5}));
}

TEST(SamplerTest, RepetitionAndPresencePenaltiesDemoteSeenTokens) {
  const auto logits = Logits();
  SamplingParams p;
  p.temperature = 0;
  p.repetition_penalty = 1.2f;  // 2.0 / 1.2 = 1.67 < 1.9
  EXPECT_EQ(Sampler(p).Sample(logits, std::vector<int32_t>{1}).token, 5);
  p = {};
  p.temperature = 0;
  p.presence_penalty = 1.0f;
  EXPECT_EQ(Sampler(p).Sample(logits, std::vector<int32_t>{1, 5}).token, 3);
  // Outside the window, the penalty does not apply.
  p.penalty_last_n = 1;
  EXPECT_EQ(Sampler(p).Sample(logits, std::vector<int32_t>{1, 0}).token, 1);
}

// Sampling elsewhere (NextRow, then the rule on the row) gives exactly the tokens Sample gives,
// step after step, for every rule shape; only penalties keep a sampler on the host.
TEST(SamplerTest, NextRowThenTheRuleEqualsSample) {
  std::vector<float> logits(300);
  for (size_t i = 0; i < logits.size(); ++i)
    logits[i] = static_cast<float>(std::sin(i * 0.7) * 4.0);
  RowSampler rule;
  for (int shape = 0; shape < 6; ++shape) {
    SamplingParams p;
    p.seed = 77 + shape;
    p.temperature = shape == 0 ? 0.0f : 0.7f + 0.1f * shape;
    p.top_k = shape == 2 || shape == 5 ? 20 : 0;
    p.top_p = shape == 3 || shape == 5 ? 0.8f : 1.0f;
    p.min_p = shape == 4 ? 0.1f : 0.0f;
    Sampler here(p), there(p);
    EXPECT_FALSE(there.penalized());
    std::map<int32_t, int> seen;
    for (int step = 0; step < 50; ++step) {
      const SampledToken a = here.Sample(logits, {});
      const RowSampling r = there.NextRow(3);
      EXPECT_EQ(r.row, 3);
      const SampledToken b = rule.Sample(logits, logits, r);
      ASSERT_EQ(a.token, b.token) << "shape " << shape << " step " << step;
      EXPECT_EQ(a.logprob, b.logprob);
      ++seen[a.token];
    }
    EXPECT_EQ(seen.size() == 1, shape == 0) << "shape " << shape;  // greedy repeats itself
  }
  SamplingParams pen;
  pen.repetition_penalty = 1.3f;
  EXPECT_TRUE(Sampler(pen).penalized());
  pen.penalty_last_n = 0;  // no window: the penalty never applies
  EXPECT_FALSE(Sampler(pen).penalized());
}

TEST(RngTest, UniformIsInUnitIntervalAndDeterministic) {
  Rng a(5), b(5);
  for (int i = 0; i < 1000; ++i) {
    const double u = a.Uniform();
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_EQ(u, b.Uniform());
  }
}

}  // namespace
}  // namespace chorus

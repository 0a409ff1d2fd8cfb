// Real-model math on the CPU backend against the float64 reference (reference_forward.h):
// Llama 3.x rope_freqs.weight, linear rope scaling and Qwen3 (per-head q/k norms, head size from
// attention.key_length), at prompts of 1,000+ positions where the rope details matter; and the
// strict loader's refusals (unknown architecture, tensor or math-changing metadata key).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "chorus/backends/cpu_backend.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"
#include "long_run.h"
#include "random_model_file.h"
#include "reference_forward.h"

namespace chorus {
namespace {

using testing::LongRun;
using testing::LongSpec;
using testing::Reference;
using testing::RelError;
using testing::RunLong;

// Decodes from a 1,100-token prompt and checks every logit row against the reference; when
// `sensitive`, the reference that ignores rope_freqs must be far off (the test can fail).
void CheckLongContext(const RandomModelSpec& spec, bool sensitive_to_rope_freqs) {
  auto backend = CreateCpuBackend(2);
  auto model = Model::FromFile(testing::MakeModelFile(spec), backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  constexpr int kPrompt = 1100, kSteps = 6;
  const LongRun run = RunLong(model->get(), backend.get(), kPrompt, kSteps);
  const auto want = Reference((*model)->file(), run.tokens, false, kPrompt - 1);
  for (int s = 0; s <= kSteps; ++s) {
    EXPECT_LT(RelError(run.logits[s].data(), want[kPrompt - 1 + s]), 2e-4) << "decode step " << s;
  }
  if (sensitive_to_rope_freqs) {
    const auto ignoring = Reference((*model)->file(), run.tokens, true, kPrompt - 1);
    EXPECT_GT(RelError(run.logits[0].data(), ignoring[kPrompt - 1]), 1e-3)
        << "rope_freqs should change the logits at position " << kPrompt - 1;
  }
}

TEST(RealMathTest, LlamaRopeFreqsMatchReferenceAtLongPositions) {
  RandomModelSpec s = LongSpec("llama");
  s.rope_freqs = true;
  CheckLongContext(s, /*sensitive_to_rope_freqs=*/true);
}

TEST(RealMathTest, LinearRopeScalingMatchesReference) {
  RandomModelSpec s = LongSpec("llama");
  s.rope_linear_factor = 4.0f;
  CheckLongContext(s, false);
}

TEST(RealMathTest, Qwen3WithWideHeadsMatchesReference) {
  RandomModelSpec s = LongSpec("qwen3");
  s.head_dim = 32;  // q_dim 128 != dim 64: attention.key_length decides
  s.rope_base = 1000000.0f;
  s.tied_output = true;
  CheckLongContext(s, false);
}

TEST(RealMathTest, Qwen3ConfigReadsKeyLengthAndNorms) {
  RandomModelSpec s = LongSpec("qwen3");
  s.head_dim = 32;
  auto backend = CreateCpuBackend(1);
  auto model = Model::FromFile(testing::MakeModelFile(s), backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.rope_style, RopeStyle::kHalves);
  EXPECT_NE((*model)->weights().layers[1].k_norm.data, nullptr);
}

// --- The strict loader ---------------------------------------------------------------------

absl::Status LoadWith(const std::function<void(GgufWriter*)>& extra,
                      RandomModelSpec spec = RandomModelSpec()) {
  GgufWriter w;
  EXPECT_TRUE(BuildRandomModel(spec, nullptr, &w).ok());
  extra(&w);
  auto f = GgufFile::FromBytes(w.Serialize());
  if (!f.ok()) return f.status();
  auto backend = CreateCpuBackend(1);
  return Model::FromFile(std::move(*f), backend.get()).status();
}

void ExpectRefused(const absl::Status& s, const std::string& names) {
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find(names), std::string::npos) << s;
}

TEST(StrictLoaderTest, RefusesUnknownTensor) {
  ExpectRefused(LoadWith([](GgufWriter* w) {
                  w->AddTensor("blk.0.attn_sinks.weight", GgmlType::kF32, {4},
                               std::string(16, '\0'));
                }),
                "blk.0.attn_sinks.weight");
}

TEST(StrictLoaderTest, IgnoresOnlyListedTensors) {
  EXPECT_TRUE(LoadWith([](GgufWriter* w) {
                w->AddTensor("blk.0.attn_rot_embd", GgmlType::kF32, {8}, std::string(32, '\0'));
              }).ok());
}

TEST(StrictLoaderTest, RefusesMathKeysItDoesNotImplement) {
  ExpectRefused(LoadWith([](GgufWriter* w) { w->SetU32("llama.attention.sliding_window", 4096); }),
                "llama.attention.sliding_window");
  ExpectRefused(LoadWith([](GgufWriter* w) { w->SetF32("llama.attn_logit_softcapping", 50.0f); }),
                "llama.attn_logit_softcapping");
  ExpectRefused(LoadWith([](GgufWriter* w) { w->SetU32("llama.expert_count", 8); }),
                "llama.expert_count");
}

TEST(StrictLoaderTest, RefusesYarnAndUnknownRopeScaling) {
  ExpectRefused(LoadWith([](GgufWriter* w) {
                  w->SetString("llama.rope.scaling.type", "yarn");
                  w->SetF32("llama.rope.scaling.factor", 4.0f);
                }),
                "llama.rope.scaling.type");
  ExpectRefused(LoadWith([](GgufWriter* w) {
                  w->SetString("llama.rope.scaling.type", "linear");
                  w->SetF32("llama.rope.scaling.factor", 2.0f);
                  w->SetF32("llama.rope.scaling.attn_factor", 0.5f);
                }),
                "llama.rope.scaling.attn_factor");
  ExpectRefused(LoadWith([](GgufWriter* w) { w->SetString("llama.rope.scaling.type", "linear"); }),
                "llama.rope.scaling.factor");
}

TEST(StrictLoaderTest, LinearScalingIsExact) {
  RandomModelSpec s;
  s.rope_linear_factor = 8.0f;
  auto backend = CreateCpuBackend(1);
  auto model = Model::FromFile(testing::MakeModelFile(s), backend.get());
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_EQ((*model)->config().rope_freq_scale, 0.125f);
}

TEST(StrictLoaderTest, RefusesUnknownArchitectureListingSupported) {
  GgufWriter w;
  w.SetString("general.architecture", "gemma2");
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok());
  auto c = ReadModelConfig(**f);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(c.status().message().find("gemma2"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("llama, qwen2, qwen3"), std::string::npos) << c.status();
}

TEST(StrictLoaderTest, RopeFreqsOfTheWrongLengthAreRefused) {
  ExpectRefused(LoadWith([](GgufWriter* w) {
                  w->AddTensor("rope_freqs.weight", GgmlType::kF32, {3}, std::string(12, '\0'));
                }),
                "rope_freqs.weight");
}

}  // namespace
}  // namespace chorus

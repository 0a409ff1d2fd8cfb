// Hugging Face directories made in the test from random weights (hf_test_util.h writes them
// from the layouts' definitions): the loaded model gives exactly the logits of the same weights
// as GGUF, and the float64 reference computed with HF's own math (rotate-half RoPE on the
// unpermuted q/k rows) agrees, so the llama q/k permutation is checked, not trusted.
#include "chorus/hf/hf_model.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "../model/long_run.h"
#include "../model/random_model_file.h"
#include "../model/reference_forward.h"
#include "../test_util.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/model/model.h"
#include "hf_test_util.h"

namespace chorus {
namespace {

using testing::HfMathGguf;
using testing::LongRun;
using testing::RelError;
using testing::RunLong;

RandomModelSpec Spec(const std::string& arch) {
  RandomModelSpec s = testing::LongSpec(arch);
  s.context_length = 4096;
  s.seed = 23;
  return s;
}

std::string FreshDir(const std::string& name) {
  const std::string dir = testing::TempPath(name);
  std::filesystem::remove_all(dir);
  return dir;
}

// Loads the directory and the GGUF, runs both, and checks them against the reference.
void CheckDirectory(const RandomModelSpec& spec, int shards, bool check_sensitivity = false) {
  auto gguf = testing::MakeModelFile(spec);
  const std::string dir = FreshDir("hf_" + spec.arch + std::to_string(shards));
  testing::WriteHfModel(*gguf, spec, dir, shards);
  const auto hf_math = HfMathGguf(*gguf);
  const auto ignoring_permutation = HfMathGguf(*gguf, /*hf_rope=*/false);
  auto backend = CreateCpuBackend(2);
  auto from_dir = Model::Load(dir, backend.get());
  ASSERT_TRUE(from_dir.ok()) << from_dir.status();
  auto from_gguf = Model::FromFile(std::move(gguf), backend.get());
  ASSERT_TRUE(from_gguf.ok()) << from_gguf.status();
  EXPECT_EQ((*from_dir)->config().arch, spec.arch);
  EXPECT_EQ((*from_dir)->config().head_dim, (*from_gguf)->config().head_dim);
  constexpr int kPrompt = 40, kSteps = 4;
  const LongRun a = RunLong(from_dir->get(), backend.get(), kPrompt, kSteps);
  const LongRun b = RunLong(from_gguf->get(), backend.get(), kPrompt, kSteps);
  EXPECT_EQ(a.tokens, b.tokens);
  const auto want = testing::Reference(*hf_math, a.tokens, false, kPrompt - 1);
  for (int s = 0; s <= kSteps; ++s) {
    EXPECT_EQ(a.logits[s], b.logits[s]) << "step " << s << ": not identical to the GGUF";
    EXPECT_LT(RelError(a.logits[s].data(), want[kPrompt - 1 + s]), 2e-4) << "step " << s;
  }
  if (check_sensitivity) {  // the test can fail: without the permutation the logits differ
    const auto wrong = testing::Reference(*ignoring_permutation, a.tokens, false, kPrompt - 1);
    EXPECT_GT(RelError(a.logits[0].data(), wrong[kPrompt - 1]), 1e-3);
  }
  std::filesystem::remove_all(dir);
}

TEST(HfModelTest, LlamaWithLlama3RopeScalingMatchesGgufAndHfMath) {
  RandomModelSpec s = Spec("llama");
  s.rope_freqs = true;
  CheckDirectory(s, 1, /*check_sensitivity=*/true);
}

TEST(HfModelTest, LlamaBf16ShardedTiedLinearRope) {
  RandomModelSpec s = Spec("llama");
  s.weight_type = GgmlType::kBF16;
  s.tied_output = true;
  s.rope_linear_factor = 4.0f;
  s.n_kv_heads = 4;
  CheckDirectory(s, 3, /*check_sensitivity=*/true);
}

TEST(HfModelTest, Qwen2WithBiasesMatchesGguf) {
  RandomModelSpec s = Spec("qwen2");
  s.weight_type = GgmlType::kF16;
  CheckDirectory(s, 2);
}

TEST(HfModelTest, Qwen3WithWideHeadsMatchesGguf) {
  RandomModelSpec s = Spec("qwen3");
  s.head_dim = 32;  // != dim / heads: config.json's head_dim
  s.weight_type = GgmlType::kBF16;
  CheckDirectory(s, 1);
}

TEST(HfModelTest, TokenizerKeysFromTheDirectory) {
  RandomModelSpec s = Spec("qwen3");
  auto gguf = testing::MakeModelFile(s);
  const std::string dir = FreshDir("hf_tok");
  testing::WriteHfModel(*gguf, s, dir);
  auto f = OpenHfModel(dir);
  ASSERT_TRUE(f.ok()) << f.status();
  auto tok = Tokenizer::FromGguf(**f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.vocab_size(), 300);  // 263 tokens padded to the embedding's rows
  EXPECT_EQ(t.token_type(299), TokenType::kUnused);
  EXPECT_EQ(t.TokenToBytes(299), "");
  EXPECT_EQ(t.bos_id(), 260);
  EXPECT_EQ(t.eos_id(), 261);
  EXPECT_FALSE(t.add_bos());
  EXPECT_TRUE(t.IsEndOfGeneration(261));
  EXPECT_TRUE(t.IsEndOfGeneration(262));  // generation_config's list
  EXPECT_FALSE(t.IsEndOfGeneration(259));
  // Merges in both spellings; <think> (not special) matched even without special parsing.
  EXPECT_EQ(t.Encode("hello", false, false), std::vector<int32_t>({259}));
  EXPECT_EQ(t.Encode("hello<think>", false, false), std::vector<int32_t>({259, 262}));
  EXPECT_EQ(t.Encode("<|eos|>", false, true), std::vector<int32_t>({261}));
  EXPECT_GT(t.Encode("<|eos|>", false, false).size(), 1u);
  auto chat = (*f)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(*chat, "{{'<|im_start|>' + m.role}}");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace chorus

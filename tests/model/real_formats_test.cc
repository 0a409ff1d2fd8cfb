// Files quantized by llama.cpp (shared/fixtures/real-formats: Q4_K_M and Q6_K, with a Llama
// 3.1-style rope_freqs.weight) decoded greedily on the CPU backend must print the independent
// float64 reference's continuation (expected.json, computed outside this project), at a 29- and
// a 1,235-token prompt. At the long prompt the reference that ignores rope_freqs departs at the
// second token, so an engine that drops the divisors fails here.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "chorus/backends/cpu_backend.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"

namespace chorus {
namespace {

const std::string kDir = std::string(CHORUS_SHARED_DIR) + "/fixtures/real-formats/";

nlohmann::json LoadExpected() {
  std::ifstream in(kDir + "expected.json");
  if (!in) return nullptr;
  return nlohmann::json::parse(in);
}

// Greedy continuation of `prompt` (prefilled in chunks of 512 rows).
std::vector<int32_t> Greedy(Model* model, Backend* backend, const std::vector<int32_t>& prompt,
                            int steps) {
  constexpr int kBlock = 16;
  const int blocks = (static_cast<int>(prompt.size()) + steps) / kBlock + 1;
  auto kv = KvCache::Create(backend, model->config(), blocks, kBlock);
  EXPECT_TRUE(kv.ok());
  Transformer tf(model, backend, kv->get());
  ForwardBatch b;
  b.max_blocks_per_seq = blocks;
  for (int i = 0; i < blocks; ++i) b.block_tables.push_back(i);
  std::vector<float> logits;
  std::vector<int32_t> out;
  const int n = static_cast<int>(prompt.size());
  for (int start = 0; start < n; start += 512) {
    const int end = std::min(n, start + 512);
    b.tokens.assign(prompt.begin() + start, prompt.begin() + end);
    b.positions.clear();
    for (int t = start; t < end; ++t) b.positions.push_back(t);
    b.seq_of_token.assign(end - start, 0);
    b.logit_rows = {end - start - 1};
    EXPECT_TRUE(tf.Forward(b, &logits).ok());
  }
  for (int s = 0; s < steps; ++s) {
    const int32_t next =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    out.push_back(next);
    b.tokens = {next};
    b.positions = {n + s};
    b.seq_of_token = {0};
    b.logit_rows = {0};
    EXPECT_TRUE(tf.Forward(b, &logits).ok());
  }
  return out;
}

TEST(RealFormatsTest, KQuantFilesDecodeLikeTheFloat64Reference) {
  const nlohmann::json expected = LoadExpected();
  if (expected.is_null()) GTEST_SKIP() << "shared/fixtures/real-formats not present";
  auto backend = CreateCpuBackend(2);
  for (const auto& c : expected["cases"]) {
    const std::string file = c["file"];
    SCOPED_TRACE(file + " / " + std::string(c["name"]));
    auto model = Model::Load(kDir + file, backend.get());
    ASSERT_TRUE(model.ok()) << model.status();
    const auto prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    // Our GPT-2 BPE tokenizer agrees with the ids the fixture was made with.
    EXPECT_EQ((*model)->tokenizer().Encode(std::string(c["prompt"]), true, false), prompt);
    const auto want = c["reference"]["tokens"].get<std::vector<int32_t>>();
    const int exact = c["reference"]["exact_steps"];
    const auto got = Greedy(model->get(), backend.get(), prompt, static_cast<int>(want.size()));
    ASSERT_EQ(got.size(), want.size());
    for (int s = 0; s < exact; ++s) ASSERT_EQ(got[s], want[s]) << "step " << s;
    if (exact == static_cast<int>(want.size())) {
      EXPECT_EQ((*model)->tokenizer().Decode(got, false), std::string(c["reference"]["text"]));
    }
  }
}

TEST(RealFormatsTest, KQuantTensorTypesAreTheOnesTheFixtureDeclares) {
  const nlohmann::json expected = LoadExpected();
  if (expected.is_null()) GTEST_SKIP() << "shared/fixtures/real-formats not present";
  for (const auto& [file, info] : expected["files"].items()) {
    auto f = GgufFile::Open(kDir + file);
    ASSERT_TRUE(f.ok()) << f.status();
    std::map<std::string, int> counts;
    for (const auto& t : (*f)->tensors()) ++counts[std::string(TypeName(t.type))];
    for (const auto& [type, n] : info["tensor_types"].items()) {
      EXPECT_EQ(counts[type], n.get<int>()) << file << " " << type;
    }
  }
}

}  // namespace
}  // namespace chorus

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
#include "long_run.h"

namespace chorus {
namespace {

const std::string kDir = std::string(CHORUS_SHARED_DIR) + "/fixtures/real-formats/";

nlohmann::json LoadExpected() {
  std::ifstream in(kDir + "expected.json");
  if (!in) return nullptr;
  return nlohmann::json::parse(in);
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
    const auto got =
        testing::Greedy(model->get(), backend.get(), prompt, static_cast<int>(want.size()));
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

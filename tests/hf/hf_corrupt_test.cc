// Corrupt safetensors files and malformed or unsupported config.json files are refused with an
// error naming the file and the tensor or key; nothing crashes, nothing is half-loaded.
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "../model/random_model_file.h"
#include "../test_util.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/hf/hf_model.h"
#include "chorus/hf/safetensors.h"
#include "chorus/model/model.h"
#include "hf_test_util.h"

namespace chorus {
namespace {

using testing::Json;

std::string Image(const std::string& header, const std::string& data) {
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

// The error of reading `bytes`, which must be DATA_LOSS and mention `want`.
void ExpectCorrupt(const std::string& bytes, const std::string& want) {
  auto f = SafetensorsFile::FromBytes(bytes, "x.safetensors");
  ASSERT_FALSE(f.ok()) << "accepted a file that should mention: " << want;
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss) << f.status();
  EXPECT_NE(f.status().message().find("x.safetensors"), std::string::npos) << f.status();
  EXPECT_NE(f.status().message().find(want), std::string::npos) << f.status();
}

TEST(SafetensorsTest, ReadsWhatTheWriterWrites) {
  SafetensorsWriter w;
  w.Add("b", SafetensorsDtype::kF32, {2, 3}, std::string(24, '\1'));
  w.Add("a", SafetensorsDtype::kBF16, {3}, std::string(6, '\2'));
  w.Add("scalar", SafetensorsDtype::kI64, {}, std::string(8, '\3'));
  w.SetMetadata("format", "pt");
  const std::string bytes = w.Serialize();
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);  // header padded as the reference writer does
  auto f = SafetensorsFile::FromBytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status();
  ASSERT_EQ((*f)->tensors().size(), 3u);
  const SafetensorsTensor* b = (*f)->Find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->shape, std::vector<int64_t>({2, 3}));
  EXPECT_EQ(b->data[0], 1);
  EXPECT_EQ((*f)->Find("a")->dtype, SafetensorsDtype::kBF16);
  EXPECT_EQ((*f)->Find("scalar")->num_elements, 1);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->Find("c"), nullptr);
}

TEST(SafetensorsTest, FuzzCorpusFilesAreValid) {
  int n = 0;
  for (const auto& e :
       std::filesystem::directory_iterator(testing::SourcePath("tests/fuzz/corpus_safetensors"))) {
    auto f = SafetensorsFile::Open(e.path().string());
    EXPECT_TRUE(f.ok()) << f.status();
    ++n;
  }
  EXPECT_GE(n, 2);
}

TEST(SafetensorsTest, RefusesCorruptHeaders) {
  const std::string t = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data(8, '\0');
  ExpectCorrupt("", "no header length");
  ExpectCorrupt(Image("{" + t + "}", data).substr(0, 20), "runs past the end");
  ExpectCorrupt(Image("{" + t + "}", data).substr(0, 14 + t.size()), "truncated");
  std::string huge = Image("{}", "");
  const uint64_t big = 1ull << 40;
  std::memcpy(huge.data(), &big, 8);
  ExpectCorrupt(huge, "exceeds the limit");
  ExpectCorrupt(Image("[1]", ""), "does not start with '{'");
  ExpectCorrupt(Image("{\"t\":", ""), "not valid JSON");
  ExpectCorrupt(Image("{" + t + "," + t + "}", data), "duplicate key 't'");
  ExpectCorrupt(Image(R"({"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", data),
                "unknown dtype");
  ExpectCorrupt(Image(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data),
                "tensor 't': holds 8 bytes but F32 shape [3] needs 3 x 4");
  ExpectCorrupt(Image(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data),
                "is not a count");
  ExpectCorrupt(Image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", data),
                "data_offsets must be");
  ExpectCorrupt(Image(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4],
                      "data_offsets":[0,8]}})",
                      data),
                "overflows");
  ExpectCorrupt(Image(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", data),
                "unknown field 'x'");
  // Two tensors over the same bytes, a gap, and bytes after the last tensor.
  const std::string u = R"("u":{"dtype":"F32","shape":[2],"data_offsets":[4,12]})";
  ExpectCorrupt(Image("{" + t + "," + u + "}", std::string(12, '\0')), "overlap");
  const std::string v = R"("v":{"dtype":"F32","shape":[1],"data_offsets":[12,16]})";
  ExpectCorrupt(Image("{" + t + "," + v + "}", std::string(16, '\0')), "leave a gap");
  ExpectCorrupt(Image("{" + t + "}", std::string(9, '\0')), "cover 8 bytes");
  ExpectCorrupt(Image(R"({"__metadata__":{"k":1}})", ""), "__metadata__ value");
}

class HfDirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    spec_.arch = "llama";
    spec_.dim = 32;
    spec_.n_heads = 4;
    spec_.n_kv_heads = 2;
    spec_.ffn_dim = 64;
    spec_.vocab_size = 270;
    gguf_ = testing::MakeModelFile(spec_);
    dir_ = testing::TempPath("hf_corrupt");
    std::filesystem::remove_all(dir_);
    testing::WriteHfModel(*gguf_, spec_, dir_);
    config_ = testing::HfConfigJson(*gguf_, spec_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  absl::Status Load() {
    auto backend = CreateCpuBackend(1);
    auto m = Model::Load(dir_, backend.get());
    return m.status();
  }
  void ExpectRefused(absl::StatusCode code, const std::vector<std::string>& wants) {
    const absl::Status s = Load();
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), code) << s;
    for (const std::string& w : wants) EXPECT_NE(s.message().find(w), std::string::npos) << s;
  }
  void WriteConfig(const Json& c) { testing::WriteText(dir_ + "/config.json", c.dump()); }

  RandomModelSpec spec_;
  std::unique_ptr<GgufFile> gguf_;
  std::string dir_;
  Json config_;
};

TEST_F(HfDirectoryTest, LoadsWhenIntact) { EXPECT_TRUE(Load().ok()) << Load(); }

TEST_F(HfDirectoryTest, RefusesATruncatedSafetensorsFile) {
  const std::string path = dir_ + "/model.safetensors";
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 100);
  ExpectRefused(absl::StatusCode::kDataLoss, {"model.safetensors", "truncated"});
  std::filesystem::resize_file(path, 5);
  ExpectRefused(absl::StatusCode::kDataLoss, {"model.safetensors", "no header length"});
}

TEST_F(HfDirectoryTest, RefusesMalformedConfigJson) {
  testing::WriteText(dir_ + "/config.json", "{\"hidden_size\": 32,");
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"config.json", "not valid JSON"});
  Json c = config_;
  c.erase("num_hidden_layers");
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"config.json", "'num_hidden_layers'"});
  c = config_;
  c["hidden_size"] = "32";
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"config.json", "'hidden_size'", "integer"});
  c = config_;
  c["num_attention_heads"] = 0;
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"num_attention_heads", "not in [1"});
}

TEST_F(HfDirectoryTest, RefusesWhatItDoesNotImplement) {
  Json c = config_;
  c["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"rope_scaling.rope_type", "yarn"});
  c["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"rope_scaling.type", "dynamic"});
  c = config_;
  c["architectures"] = {"GemmaForCausalLM"};
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"GemmaForCausalLM", "Qwen3ForCausalLM"});
  c = config_;
  c["architectures"] = {"MistralForCausalLM"};  // default window 4096 < 8192 positions
  c["max_position_embeddings"] = 8192;
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"sliding_window = 4096", "8192"});
  c["sliding_window"] = nullptr;
  WriteConfig(c);
  EXPECT_TRUE(Load().ok()) << Load();
  c = config_;
  c["attention_bias"] = true;
  WriteConfig(c);
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"attention_bias"});
  c = config_;
  c["tie_word_embeddings"] = true;  // lm_head present but ignored, as HF ties it
  WriteConfig(c);
  EXPECT_TRUE(Load().ok()) << Load();
}

TEST_F(HfDirectoryTest, RefusesUnknownOrMissingTensors) {
  auto tensors = testing::HfTensors(*gguf_);
  SafetensorsWriter w;
  for (const auto& [name, t] : tensors) {
    if (name != "lm_head.weight") w.Add(name, testing::DtypeOf(t.type), t.shape, t.bytes);
  }
  ASSERT_TRUE(w.WriteFile(dir_ + "/model.safetensors").ok());
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"lm_head.weight", "tie_word_embeddings"});
  w.Add("model.layers.0.self_attn.o_proj.bias", SafetensorsDtype::kF32, {32},
        std::string(128, '\0'));
  w.Add("lm_head.weight", SafetensorsDtype::kF32, {270, 32}, std::string(270 * 32 * 4, '\0'));
  ASSERT_TRUE(w.WriteFile(dir_ + "/model.safetensors").ok());
  ExpectRefused(absl::StatusCode::kFailedPrecondition,
                {"model.safetensors", "model.layers.0.self_attn.o_proj.bias", "not used"});
}

TEST_F(HfDirectoryTest, RefusesTokenizersItCannotReproduce) {
  const std::string path = dir_ + "/tokenizer.json";
  const Json good = Json::parse(testing::ReadFile(path));
  auto with = [&](const std::function<void(Json&)>& edit) {
    Json t = good;
    edit(t);
    testing::WriteText(path, t.dump());
  };
  with([](Json& t) { t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+"; });
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"tokenizer.json", "pre_tokenizer regex"});
  with([](Json& t) { t["normalizer"] = {{"type", "NFKC"}}; });
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"normalizer", "NFKC"});
  with([](Json& t) { t["added_tokens"][0]["lstrip"] = true; });
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"<|bos|>", "lstrip"});
  with([](Json& t) { t["model"]["merges"].push_back("q zz"); });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"merge 'q zz'", "'zz'"});
  with([](Json& t) { t["model"]["vocab"]["big"] = 100000; });
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"'big'", "100000"});
  with([](Json& t) { t["model"]["type"] = "Unigram"; });
  ExpectRefused(absl::StatusCode::kFailedPrecondition, {"Unigram"});
  testing::WriteText(path, good.dump());
  EXPECT_TRUE(Load().ok()) << Load();
}

TEST_F(HfDirectoryTest, RefusesInconsistentShardIndexes) {
  std::filesystem::remove_all(dir_);
  testing::WriteHfModel(*gguf_, spec_, dir_, 2);
  ASSERT_TRUE(Load().ok()) << Load();
  const std::string index = dir_ + "/model.safetensors.index.json";
  Json j = Json::parse(testing::ReadFile(index));
  Json& entry = j["weight_map"]["model.norm.weight"];  // point it at the other shard
  entry = entry == "model-00001-of-00002.safetensors" ? "model-00002-of-00002.safetensors"
                                                      : "model-00001-of-00002.safetensors";
  testing::WriteText(index, j.dump());
  ExpectRefused(absl::StatusCode::kDataLoss, {"model.safetensors.index.json", "is not in"});
  j["weight_map"]["x"] = "../escape.safetensors";
  testing::WriteText(index, j.dump());
  ExpectRefused(absl::StatusCode::kInvalidArgument, {"not a file in the directory"});
}

}  // namespace
}  // namespace chorus

// SentencePiece-style tokenizer.json (Llama 2, Mistral: BPE with byte_fallback and "▁" for
// spaces). No such file is in the fixtures, so the test writes one from the Llama 2 vocabulary
// in shared/tokenizers/llama-spm.gguf the way transformers' converter derives it (every vocab
// piece that splits into two vocab pieces is a merge; merges ordered by the piece's score),
// loads it through the Hugging Face path (merge ranks become scores) and checks llama.cpp's
// reference ids for that vocabulary.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <sstream>

#include "../test_util.h"
#include "chorus/hf/hf_model.h"
#include "chorus/tokenizer/tokenizer.h"
#include "hf_test_util.h"

namespace chorus {
namespace {

using testing::Json;

// tokenizer.json + tokenizer_config.json for the SentencePiece vocabulary of `g`.
void WriteSpmTokenizer(const GgufFile& g, const std::string& dir) {
  const GgufValue* tokens = g.Find("tokenizer.ggml.tokens");
  const GgufValue* scores = g.Find("tokenizer.ggml.scores");
  const GgufValue* types = g.Find("tokenizer.ggml.token_type");
  Json vocab = Json::object();
  std::map<std::string, int64_t> id_of;
  for (uint64_t i = 0; i < tokens->count; ++i) {
    vocab[std::string(tokens->strings[i])] = i;
    id_of[std::string(tokens->strings[i])] = static_cast<int64_t>(i);
  }
  struct Merge {
    float score;
    int64_t l, r;
    std::string text;
  };
  std::vector<Merge> merges;
  for (uint64_t i = 0; i < tokens->count; ++i) {
    if (types->ArrayInt(i) != 1) continue;
    const std::string piece(tokens->strings[i]);
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      auto l = id_of.find(piece.substr(0, cut)), r = id_of.find(piece.substr(cut));
      if (l == id_of.end() || r == id_of.end()) continue;
      merges.push_back({static_cast<float>(scores->ArrayFloat(i)), l->second, r->second,
                        l->first + " " + r->first});
    }
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    return a.score != b.score ? a.score > b.score : std::pair(a.l, a.r) < std::pair(b.l, b.r);
  });
  Json merge_list = Json::array();
  for (const Merge& m : merges) merge_list.push_back(m.text);
  auto added = [](int id, const char* text) {
    return Json{{"id", id},        {"content", text},     {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  const std::string space = "\xe2\x96\x81";
  const Json tok = {
      {"added_tokens", {added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")}},
      {"normalizer",
       {{"type", "Sequence"},
        {"normalizers",
         {{{"type", "Prepend"}, {"prepend", space}},
          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}}},
      {"pre_tokenizer", nullptr},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
      {"decoder", {{"type", "Sequence"}, {"decoders", Json::array()}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", "<unk>"},
        {"byte_fallback", true},
        {"fuse_unk", true},
        {"vocab", vocab},
        {"merges", merge_list}}}};
  std::filesystem::create_directories(dir);
  testing::WriteText(dir + "/tokenizer.json", tok.dump());
  testing::WriteText(dir + "/tokenizer_config.json", Json{{"bos_token", "<s>"},
                                                          {"eos_token", "</s>"},
                                                          {"unk_token", "<unk>"},
                                                          {"add_bos_token", true},
                                                          {"tokenizer_class", "LlamaTokenizer"}}
                                                         .dump());
}

TEST(HfSpmTokenizerTest, Llama2StyleTokenizerJsonMatchesReference) {
  const std::string gguf_path = testing::SharedPath("tokenizers/llama-spm.gguf");
  if (!testing::Exists(gguf_path)) GTEST_SKIP() << "shared fixtures absent";
  auto g = GgufFile::Open(gguf_path);
  ASSERT_TRUE(g.ok()) << g.status();
  const std::string dir = testing::TempPath("hf_spm");
  WriteSpmTokenizer(**g, dir);
  auto file = OpenHfTokenizer(dir);
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const Tokenizer& t = **tok;
  EXPECT_EQ(t.bos_id(), 1);
  EXPECT_TRUE(t.add_bos());
  EXPECT_TRUE(t.add_space_prefix());
  EXPECT_EQ(t.token_type(0), TokenType::kUnknown);
  EXPECT_EQ(t.token_type(3), TokenType::kByte);  // <0x00>
  const std::string inp = testing::ReadFile(testing::SharedPath("tokenizers/llama-spm.inp"));
  std::istringstream out(testing::ReadFile(testing::SharedPath("tokenizers/llama-spm.out")));
  const std::string sep = "\n__ggml_vocab_test__\n";
  int n = 0, ok = 0;
  for (size_t pos = 0, next; (next = inp.find(sep, pos)) != std::string::npos;
       pos = next + sep.size()) {
    const std::string text = inp.substr(pos, next - pos);
    std::string line;
    std::getline(out, line);
    std::istringstream ids_in(line);
    std::vector<int32_t> want;
    for (int32_t id; ids_in >> id;) want.push_back(id);
    const auto ids = t.Encode(text, false, false);
    EXPECT_EQ(ids, want) << "[" << text << "]";
    EXPECT_EQ(t.Decode(ids, true), text);
    ++n;
    ok += ids == want;
  }
  std::printf("llama-spm via tokenizer.json: %d/%d encode cases\n", ok, n);
  EXPECT_GT(n, 10);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace chorus

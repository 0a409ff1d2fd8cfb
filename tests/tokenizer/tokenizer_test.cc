// Tokenizers against independent expectations: the reference tokenizers' ids for the shared
// vocabularies (Hugging Face tokenizers, via llama.cpp's test lists) and llama2.c's encode rules
// for the stories260K vocabulary.
#include "chorus/tokenizer/tokenizer.h"

#include <gtest/gtest.h>

#include <climits>
#include <map>
#include <sstream>

#include "../test_util.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/gguf/random_model.h"

namespace chorus {
namespace {

using testing::ReadFile;
using testing::SharedPath;

struct Case {
  std::string text;
  std::vector<int32_t> ids;
};

std::vector<Case> LoadCases(const std::string& name) {
  const std::string inp = ReadFile(SharedPath("tokenizers/" + name + ".inp"));
  const std::string out = ReadFile(SharedPath("tokenizers/" + name + ".out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0;;) {
    size_t next = inp.find(sep, pos);
    if (next == std::string::npos) break;
    texts.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<Case> cases;
  std::istringstream lines(out);
  std::string line;
  for (const auto& t : texts) {
    std::getline(lines, line);
    Case c{t, {}};
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) c.ids.push_back(id);
    cases.push_back(c);
  }
  return cases;
}

void CheckVocab(const std::string& name) {
  const std::string path = SharedPath("tokenizers/" + name + ".gguf");
  if (!testing::Exists(path)) GTEST_SKIP() << "shared fixtures absent: " << path;
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  const auto cases = LoadCases(name);
  ASSERT_GT(cases.size(), 10u);
  int failures = 0;
  for (const auto& c : cases) {
    const auto ids = (*tok)->Encode(c.text, /*add_special=*/false, /*parse_special=*/false);
    EXPECT_EQ(ids, c.ids) << name << " text: [" << c.text << "]";
    failures += ids != c.ids;
    // Decoding gives back the text (the SPM dummy prefix is stripped).
    EXPECT_EQ((*tok)->Decode(ids, (*tok)->add_space_prefix()), c.text);
  }
  EXPECT_EQ(failures, 0);
}

TEST(TokenizerTest, LlamaSpmMatchesReference) { CheckVocab("llama-spm"); }
TEST(TokenizerTest, Gpt2BpeMatchesReference) { CheckVocab("gpt-2"); }
TEST(TokenizerTest, Llama3BpeMatchesReference) { CheckVocab("llama-bpe"); }

class StoriesTokenizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto file = GgufFile::Open(testing::SourcePath("models/stories260K.gguf"));
    ASSERT_TRUE(file.ok()) << file.status();
    auto tok = Tokenizer::FromGguf(**file);
    ASSERT_TRUE(tok.ok()) << tok.status();
    tok_ = std::move(*tok);
  }
  std::unique_ptr<Tokenizer> tok_;
};

// llama2.c's run.c rules (PROVENANCE.md): BOS, dummy-prefix space, code points to pieces,
// highest-score merges; byte b falls back to id b + 3.
TEST_F(StoriesTokenizerTest, EmptyTextIsBosOnly) {
  EXPECT_EQ(tok_->Encode("", true, false), std::vector<int32_t>{1});
}

TEST_F(StoriesTokenizerTest, ByteFallbackUsesIdBytePlusThree) {
  // U+4E2D has no piece in the 512-token vocabulary: its 3 UTF-8 bytes fall back.
  const auto ids = tok_->Encode("\xe4\xb8\xad", false, false);
  ASSERT_EQ(ids.size(), 4u);
  EXPECT_EQ(ids[0], tok_->FindToken("\xe2\x96\x81"));
  EXPECT_EQ(ids[1], 0xe4 + 3);
  EXPECT_EQ(ids[2], 0xb8 + 3);
  EXPECT_EQ(ids[3], 0xad + 3);
  EXPECT_EQ(tok_->Decode(ids, true), "\xe4\xb8\xad");
}

TEST_F(StoriesTokenizerTest, MergesPreferHigherScore) {
  // Independent oracle: a naive run.c-style encoder over the same vocabulary.
  auto naive = [&](const std::string& text) {
    std::vector<std::string> syms = {"\xe2\x96\x81"};
    for (char c : text) syms.push_back(c == ' ' ? "\xe2\x96\x81" : std::string(1, c));
    for (;;) {
      float best = -1e30f;
      int at = -1;
      for (size_t i = 0; i + 1 < syms.size(); ++i) {
        const int32_t id = tok_->FindToken(syms[i] + syms[i + 1]);
        if (id >= 0 && -(id - 259.0f) > best) {
          best = -(id - 259.0f);
          at = static_cast<int>(i);
        }
      }
      if (at < 0) break;
      syms[at] += syms[at + 1];
      syms.erase(syms.begin() + at + 1);
    }
    std::vector<int32_t> ids = {1};
    for (auto& s : syms) ids.push_back(tok_->FindToken(s));
    return ids;
  };
  for (std::string text : {"Once upon a time", "Lily's mom said, \"Lily, let's go.\"",
                           "the   big red ball", "Tim and Sue were happy!"}) {
    EXPECT_EQ(tok_->Encode(text, true, false), naive(text)) << text;
  }
}

TEST_F(StoriesTokenizerTest, SpecialTextIsPlainUnlessParsed) {
  const auto plain = tok_->Encode("</s>", false, false);
  EXPECT_GT(plain.size(), 1u);
  EXPECT_EQ(tok_->Encode("</s>", false, true), std::vector<int32_t>{2});
}

TEST(PreTokenizerTest, Llama3SplitsDigitsInThrees) {
  const auto parts = PreTokenize(PreTokenizer::kLlama3, "1234567 ab");
  EXPECT_EQ(parts, (std::vector<std::string_view>{"123", "456", "7", " ab"}));
  const auto q = PreTokenize(PreTokenizer::kQwen2, "123");
  EXPECT_EQ(q, (std::vector<std::string_view>{"1", "2", "3"}));
}

TEST(PreTokenizerTest, Gpt2KeepsLastSpaceForNextWord) {
  const auto parts = PreTokenize(PreTokenizer::kGpt2, "a   b's\n");
  EXPECT_EQ(parts, (std::vector<std::string_view>{"a", "  ", " b", "'s", "\n"}));
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

// A regression guard for the quadratic merge loop: a 300 KB single "word" (one pre-token)
// must tokenize (it took minutes before the heap-based merge), and small words still match a
// naive lowest-rank-first merger written here.
TEST(BpeTest, HugeWordsTokenizeAndSmallOnesMatchTheNaiveMerger) {
  const std::string path = testing::SharedPath("tokenizers/gpt-2.gguf");
  if (!testing::Exists(path)) GTEST_SKIP() << "shared fixtures absent";
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto tok = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok());
  const auto big = (*tok)->Encode(std::string(300000, 'a'), false, false);
  EXPECT_GT(big.size(), 1000u);
  EXPECT_EQ((*tok)->Decode(big, false), std::string(300000, 'a'));
  // Naive merger over the vocabulary's own merge list.
  const GgufValue* merges = (*file)->Find("tokenizer.ggml.merges");
  std::map<std::string, int> rank;
  for (uint64_t i = 0; i < merges->count; ++i)
    rank.emplace(std::string(merges->strings[i]), static_cast<int>(i));
  for (std::string word :
       {"hello", "tokenization", "aaaaaaa", "mississippi", "antidisestablishmentarianism"}) {
    std::vector<std::string> s;
    for (char c : word) s.push_back(std::string(1, c));
    for (;;) {
      int best = INT_MAX, at = -1;
      for (size_t i = 0; i + 1 < s.size(); ++i) {
        auto it = rank.find(s[i] + " " + s[i + 1]);
        if (it != rank.end() && it->second < best) best = it->second, at = static_cast<int>(i);
      }
      if (at < 0) break;
      s[at] += s[at + 1];
      s.erase(s.begin() + at + 1);
    }
    std::vector<int32_t> want;
    for (auto& piece : s) want.push_back((*tok)->FindToken(piece));
    EXPECT_EQ((*tok)->Encode(word, false, false), want) << word;
  }
}

// EOS, EOT and EOM ids from the metadata all end generation (Llama 3.1's <|eom_id|> ends a
// tool-call turn); an ordinary token does not.
TEST(TokenizerMetadataTest, EosEotAndEomIdsEndGeneration) {
  GgufWriter w;
  RandomModelSpec spec;
  ASSERT_TRUE(BuildRandomModel(spec, nullptr, &w).ok());
  w.SetU32("tokenizer.ggml.eot_token_id", 300);
  w.SetU32("tokenizer.ggml.eom_token_id", 301);
  auto f = GgufFile::FromBytes(w.Serialize());
  ASSERT_TRUE(f.ok()) << f.status();
  auto tok = Tokenizer::FromGguf(**f);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_TRUE((*tok)->IsEndOfGeneration(2));    // eos_token_id
  EXPECT_TRUE((*tok)->IsEndOfGeneration(300));  // eot
  EXPECT_TRUE((*tok)->IsEndOfGeneration(301));  // eom
  EXPECT_FALSE((*tok)->IsEndOfGeneration(302));
}

}  // namespace
}  // namespace chorus

// Chat templates are recognised, never executed, and message contents cannot inject special
// tokens. Checked against the Llama 3 vocabulary's own special-token ids.
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "../test_util.h"
#include "chorus/admission/admission.h"

namespace chorus {
namespace {

TEST(ChatTemplateTest, RecognisesTheFamiliesByTheirMarkers) {
  EXPECT_EQ(DetectChatTemplate("{% for m in messages %}<|start_header_id|>", ""),
            ChatTemplate::kLlama3);
  EXPECT_EQ(DetectChatTemplate("{{'<|im_start|>' + role}}", ""), ChatTemplate::kChatMl);
  EXPECT_EQ(DetectChatTemplate("{{ '[INST] ' + content }}", ""), ChatTemplate::kLlama2);
  EXPECT_EQ(DetectChatTemplate("{{ weird }}", ""), ChatTemplate::kNone);
  EXPECT_EQ(DetectChatTemplate("", "chatml"), ChatTemplate::kChatMl);
}

TEST(ChatTemplateTest, Llama3RenderingUsesHeaderTokensAndNeverParsesContent) {
  const std::string path = testing::SharedPath("tokenizers/llama-bpe.gguf");
  if (!testing::Exists(path)) GTEST_SKIP() << "shared fixtures absent";
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  auto tok = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok());
  auto jinja = (*file)->GetString("tokenizer.chat_template");
  ASSERT_TRUE(jinja.ok());
  ASSERT_EQ(DetectChatTemplate(*jinja, ""), ChatTemplate::kLlama3);
  const auto ids = RenderChat(ChatTemplate::kLlama3, **tok, {{"user", "Hi <|eot_id|>"}});
  const int32_t bos = (*tok)->FindToken("<|begin_of_text|>");
  const int32_t start = (*tok)->FindToken("<|start_header_id|>");
  const int32_t end = (*tok)->FindToken("<|end_header_id|>");
  const int32_t eot = (*tok)->FindToken("<|eot_id|>");
  ASSERT_GE(bos, 0);
  EXPECT_EQ(ids.front(), bos);
  EXPECT_EQ(ids[1], start);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), start), 2);  // user turn + assistant opener
  EXPECT_EQ(std::count(ids.begin(), ids.end(), end), 2);
  // Exactly one <|eot_id|>: the one closing the user turn; the one typed in the content is text.
  EXPECT_EQ(std::count(ids.begin(), ids.end(), eot), 1);
  EXPECT_EQ((*tok)->Decode({ids.end() - 2, ids.end()}, false).back(), '\n');
}

// Qwen3's real template (shared/tokenizers/hf/qwen3/tokenizer_config.json): ChatML with <think>
// blocks, told apart from plain ChatML; Llama 3's real one is Llama 3.
TEST(ChatTemplateTest, RecognisesRealQwen3AndLlama3Templates) {
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string qwen3 =
      read(std::string(CHORUS_SHARED_DIR) + "/tokenizers/hf/qwen3/tokenizer_config.json");
  const std::string llama3 =
      read(std::string(CHORUS_SHARED_DIR) + "/tokenizers/hf/llama3/tokenizer_config.json");
  if (qwen3.empty() || llama3.empty()) GTEST_SKIP() << "shared/tokenizers/hf not present";
  EXPECT_EQ(DetectChatTemplate(qwen3, ""), ChatTemplate::kChatMlThinking);
  EXPECT_EQ(DetectChatTemplate(llama3, ""), ChatTemplate::kLlama3);
  EXPECT_EQ(DetectChatTemplate("", "qwen3"), ChatTemplate::kChatMlThinking);
}

}  // namespace
}  // namespace chorus

// The real Llama 3 and Qwen3 tokenizer.json / tokenizer_config.json files in
// shared/tokenizers/hf, loaded through the Hugging Face path, against the reference ids of
// cases.json (README there): every encode case three ways, every decode, and the chat renders
// the recognised templates can express.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "chorus/admission/admission.h"
#include "chorus/core/utf8.h"
#include "chorus/hf/hf_model.h"
#include "chorus/http/openai.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {
namespace {

using Json = nlohmann::json;

std::vector<int32_t> Ids(const Json& j) { return j.get<std::vector<int32_t>>(); }

// Hugging Face decode with skip_special_tokens=false: every token's text, invalid UTF-8 as
// U+FFFD.
std::string DecodeAll(const Tokenizer& t, const std::vector<int32_t>& ids) {
  Utf8Stream s;
  std::string out;
  for (int32_t id : ids) out += s.Push(t.TokenToBytes(id, /*render_special=*/true));
  return out + s.Flush();
}

// transformers' clean_up_tokenization (clean_up_tokenization_spaces=true), for `decoded`.
std::string CleanUp(std::string s) {
  const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) {
    std::string out;
    const std::string_view f(from);
    for (size_t i = 0; i < s.size();) {
      if (s.compare(i, f.size(), f) == 0) {
        out += to;
        i += f.size();
      } else {
        out += s[i++];
      }
    }
    s = out;
  }
  return s;
}

struct Fixture {
  Json cases;
  nlohmann::ordered_json ordered;  // the same cases, keys in file order (tool JSON is rendered)
  std::unique_ptr<GgufFile> file;
  std::unique_ptr<Tokenizer> tok;
};

bool LoadFixture(const std::string& name, Fixture* f) {
  const std::string dir = testing::SharedPath("tokenizers/hf/" + name);
  if (!testing::Exists(dir + "/cases.json")) return false;
  f->cases = Json::parse(testing::ReadFile(dir + "/cases.json"));
  f->ordered = nlohmann::ordered_json::parse(testing::ReadFile(dir + "/cases.json"));
  auto file = OpenHfTokenizer(dir);
  EXPECT_TRUE(file.ok()) << file.status();
  if (!file.ok()) return false;
  f->file = std::move(*file);
  auto tok = Tokenizer::FromGguf(*f->file);
  EXPECT_TRUE(tok.ok()) << tok.status();
  if (!tok.ok()) return false;
  f->tok = std::move(*tok);
  return true;
}

void CheckEncodeAndDecode(const std::string& name) {
  Fixture f;
  if (!LoadFixture(name, &f)) GTEST_SKIP() << "shared/tokenizers/hf/" << name << " absent";
  const bool clean_up = f.cases["behaviour"]["clean_up_tokenization_spaces"] == true;
  int n = 0, encode_ok = 0, special_ok = 0, no_parse_ok = 0, decode_ok = 0, raw_ok = 0;
  for (const Json& c : f.cases["encode_cases"]) {
    const std::string text = c["text"].get<std::string>();
    const auto ids = f.tok->Encode(text, false, true);
    const std::string label = "case " + std::to_string(c["index"].get<int>());
    EXPECT_EQ(ids, Ids(c["ids"])) << label;
    EXPECT_EQ(f.tok->Encode(text, true, true), Ids(c["ids_with_special"])) << label;
    EXPECT_EQ(f.tok->Encode(text, false, false), Ids(c["ids_no_parse_special"])) << label;
    const std::string raw = DecodeAll(*f.tok, Ids(c["ids"]));
    EXPECT_EQ(raw, c["decoded_raw"].get<std::string>()) << label;
    const std::string decoded = clean_up ? CleanUp(raw) : raw;
    EXPECT_EQ(decoded, c["decoded"].get<std::string>()) << label;
    ++n;
    encode_ok += ids == Ids(c["ids"]);
    special_ok += f.tok->Encode(text, true, true) == Ids(c["ids_with_special"]);
    no_parse_ok += f.tok->Encode(text, false, false) == Ids(c["ids_no_parse_special"]);
    raw_ok += raw == c["decoded_raw"].get<std::string>();
    decode_ok += decoded == c["decoded"].get<std::string>();
  }
  std::printf(
      "%s: %d/%d encode, %d/%d with special, %d/%d no-parse-special, %d/%d decoded_raw, "
      "%d/%d decoded\n",
      name.c_str(), encode_ok, n, special_ok, n, no_parse_ok, n, raw_ok, n, decode_ok, n);
  EXPECT_GT(n, 60);
}

TEST(HfTokenizerTest, Llama3EncodeAndDecodeCases) { CheckEncodeAndDecode("llama3"); }
TEST(HfTokenizerTest, Qwen3EncodeAndDecodeCases) { CheckEncodeAndDecode("qwen3"); }

// Tool definitions and object arguments as the template's tojson writes them.
std::string ToolJson(const nlohmann::ordered_json& j) {
  std::string out;
  EXPECT_TRUE(http::ToPythonStyleJson(j.dump(), &out));
  return out;
}

std::vector<ChatMessage> Messages(const nlohmann::ordered_json& c) {
  std::vector<ChatMessage> messages;
  for (const auto& m : c["messages"]) {
    ChatMessage& msg =
        messages.emplace_back(m["role"].get<std::string>(), m["content"].get<std::string>());
    if (m.contains("reasoning_content") && !m["reasoning_content"].is_null()) {
      msg.reasoning_content = m["reasoning_content"].get<std::string>();
    }
    if (m.contains("tool_calls")) {
      for (const auto& call : m["tool_calls"]) {
        const auto& f = call.contains("function") ? call["function"] : call;
        const auto& args = f["arguments"];
        msg.tool_calls.push_back({f["name"].get<std::string>(),
                                  args.is_string() ? args.get<std::string>() : ToolJson(args)});
      }
    }
  }
  return messages;
}

// Every render of every conversation: messages with reasoning_content, tool calls and tool
// results, a tools list, and the options add_generation_prompt and enable_thinking.
void CheckChat(const std::string& name, ChatTemplate want) {
  Fixture f;
  if (!LoadFixture(name, &f)) GTEST_SKIP() << "shared/tokenizers/hf/" << name << " absent";
  auto jinja = f.file->GetString("tokenizer.chat_template");
  ASSERT_TRUE(jinja.ok()) << jinja.status();
  const ChatTemplate t = DetectChatTemplate(*jinja, "");
  ASSERT_EQ(t, want);
  int renders = 0, matched = 0;
  for (const auto& c : f.ordered["chat_cases"]) {
    const std::vector<ChatMessage> messages = Messages(c);
    ChatOptions options;
    if (c.contains("tools") && c["tools"].is_array()) {
      for (const auto& tool : c["tools"]) options.tools.push_back(ToolJson(tool));
    }
    for (const auto& r : c["renders"]) {
      ++renders;
      const auto& o = r["options"];
      options.add_generation_prompt = o.value("add_generation_prompt", false);
      options.enable_thinking.reset();
      if (o.contains("enable_thinking")) options.enable_thinking = o["enable_thinking"].get<bool>();
      const auto ids = RenderChat(t, *f.tok, messages, options);
      const auto want_ids = r["ids"].get<std::vector<int32_t>>();
      EXPECT_EQ(ids, want_ids) << name << " " << c["name"] << " " << o.dump()
                               << "\nwant: " << r["text"] << "\ngot:  " << DecodeAll(*f.tok, ids);
      matched += ids == want_ids;
    }
  }
  std::printf("%s: %d/%d chat renders match\n", name.c_str(), matched, renders);
  EXPECT_GT(renders, 0);
}

TEST(HfTokenizerTest, Llama3ChatRenders) { CheckChat("llama3", ChatTemplate::kLlama3); }
TEST(HfTokenizerTest, Qwen3ChatRenders) { CheckChat("qwen3", ChatTemplate::kChatMlThinking); }

// The agent-loop shape no fixture case has: an assistant turn with reasoning, no answer text
// and a tool call, then the tool's result. Expected text written from the Jinja template: the
// newline before a tool call depends on the answer text, not on the think block before it.
TEST(HfTokenizerTest, Qwen3ToolCallAfterReasoningWithoutAnswer) {
  Fixture f;
  if (!LoadFixture("qwen3", &f)) GTEST_SKIP() << "absent";
  std::vector<ChatMessage> m = {{"user", "q"}, {"assistant", ""}, {"tool", "ok"}};
  m[1].reasoning_content = "r";
  m[1].tool_calls.push_back({"f", "{}"});
  const auto ids = RenderChat(ChatTemplate::kChatMlThinking, *f.tok, m);
  EXPECT_EQ(
      DecodeAll(*f.tok, ids),
      "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\nr\n</think>\n\n"
      "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call><|im_end|>\n"
      "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n<|im_start|>assistant\n");
}

TEST(HfTokenizerTest, SpecialIdsAndEndOfGeneration) {
  Fixture l, q;
  if (!LoadFixture("llama3", &l) || !LoadFixture("qwen3", &q)) GTEST_SKIP() << "absent";
  EXPECT_EQ(l.tok->bos_id(), 128000);
  EXPECT_EQ(l.tok->eos_id(), 128001);
  EXPECT_FALSE(l.tok->add_bos());                 // the post-processor adds nothing (README)
  EXPECT_TRUE(l.tok->IsEndOfGeneration(128009));  // <|eot_id|>
  EXPECT_EQ(q.tok->bos_id(), -1);
  EXPECT_EQ(q.tok->eos_id(), 151645);
  EXPECT_TRUE(q.tok->IsEndOfGeneration(151643));  // <|endoftext|>
  EXPECT_EQ(q.tok->token_type(q.tok->FindToken("<think>")), TokenType::kUserDefined);
  EXPECT_EQ(q.tok->token_type(151645), TokenType::kControl);
}

}  // namespace
}  // namespace chorus

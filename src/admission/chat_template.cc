#include <string>

#include "chorus/admission/admission.h"
#include "chorus/core/utf8.h"

namespace chorus {
namespace {

// Python's str.isspace, which Jinja's trim filter strips.
bool IsPySpace(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

// Jinja's `| trim` (Llama 3 templates trim every message).
std::string Trim(std::string_view s) {
  size_t begin = 0, end = s.size();
  int len;
  while (begin < end && IsPySpace(DecodeUtf8(s, begin, &len))) begin += len;
  // Scan forward for the last non-space code point (UTF-8 cannot be decoded backwards safely).
  size_t last_end = begin;
  for (size_t i = begin; i < end; i += len) {
    if (!IsPySpace(DecodeUtf8(s, i, &len))) last_end = i + len;
  }
  return std::string(s.substr(begin, last_end - begin));
}

std::string_view StripNewlines(std::string_view s, bool left, bool right) {
  while (left && !s.empty() && s.front() == '\n') s.remove_prefix(1);
  while (right && !s.empty() && s.back() == '\n') s.remove_suffix(1);
  return s;
}

// Qwen3's assistant turn: the reasoning inside <think>...</think> and the answer after it.
void SplitThinking(const std::string& content, std::string* reasoning, std::string* answer) {
  const size_t end = content.find("</think>");
  if (end == std::string::npos) {
    *reasoning = "";
    *answer = content;
    return;
  }
  *answer = std::string(StripNewlines(content.substr(content.rfind("</think>") + 8), true, false));
  std::string_view before = StripNewlines(std::string_view(content).substr(0, end), false, true);
  const size_t open = before.rfind("<think>");
  if (open != std::string_view::npos) before.remove_prefix(open + 7);
  *reasoning = std::string(StripNewlines(before, true, false));
}

using Messages = std::vector<ChatMessage>;

// Qwen3's last user query: the last user message that is not a tool response (else the last).
size_t LastUserQuery(const Messages& messages) {
  size_t last = messages.empty() ? 0 : messages.size() - 1;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& c = messages[i].content;
    const bool tool_response = c.starts_with("<tool_response>") && c.ends_with("</tool_response>");
    if (messages[i].role == "user" && !tool_response) last = i;
  }
  return last;
}

// Qwen3's assistant turn body: assistant turns before the last user query keep only their
// answer; those after it show a <think> block when they are last or have reasoning. The
// reasoning is reasoning_content when the message has it, else what <think>...</think> holds.
// `answer` receives the template's `content` (what its tool-call newline rule tests).
std::string ThinkingAssistantContent(const Messages& messages, size_t i, size_t last_user,
                                     std::string* answer) {
  const ChatMessage& m = messages[i];
  std::string reasoning;
  if (m.reasoning_content.has_value()) {
    reasoning = *m.reasoning_content;
    *answer = m.content;
  } else {
    SplitThinking(m.content, &reasoning, answer);
  }
  if (i > last_user && (i + 1 == messages.size() || !reasoning.empty())) {
    return "<think>\n" + std::string(StripNewlines(reasoning, true, true)) + "\n</think>\n\n" +
           std::string(StripNewlines(*answer, true, false));
  }
  return *answer;
}

// Qwen3's tool calls after the assistant's text: one <tool_call> block each, a newline between
// (and before the first when the answer has text).
std::string ToolCallsText(const std::vector<ToolCall>& calls, bool has_text) {
  std::string out;
  for (size_t k = 0; k < calls.size(); ++k) {
    if (k > 0 || has_text) out += "\n";
    out += "<tool_call>\n{\"name\": \"" + calls[k].name +
           "\", \"arguments\": " + calls[k].arguments + "}\n</tool_call>";
  }
  return out;
}

}  // namespace

ChatTemplate DetectChatTemplate(std::string_view jinja, std::string_view fallback) {
  if (jinja.find("<|start_header_id|>") != std::string_view::npos) return ChatTemplate::kLlama3;
  if (jinja.find("<|im_start|>") != std::string_view::npos) {
    return jinja.find("</think>") != std::string_view::npos ? ChatTemplate::kChatMlThinking
                                                            : ChatTemplate::kChatMl;
  }
  if (jinja.find("[INST]") != std::string_view::npos) return ChatTemplate::kLlama2;
  if (fallback == "llama3") return ChatTemplate::kLlama3;
  if (fallback == "chatml") return ChatTemplate::kChatMl;
  if (fallback == "qwen3" || fallback == "chatml-thinking") return ChatTemplate::kChatMlThinking;
  if (fallback == "llama2") return ChatTemplate::kLlama2;
  return ChatTemplate::kNone;
}

bool ChatTemplateHasRole(ChatTemplate t, std::string_view role) {
  if (role == "system" || role == "user" || role == "assistant") return t != ChatTemplate::kNone;
  return role == "tool" && (t == ChatTemplate::kLlama3 || t == ChatTemplate::kChatMlThinking);
}

// Llama 3's template takes assistant tool calls and drops them (its reference renders do).
bool ChatTemplateHasToolCalls(ChatTemplate t) {
  return t == ChatTemplate::kChatMlThinking || t == ChatTemplate::kLlama3;
}

bool ChatTemplateListsTools(ChatTemplate t) { return t == ChatTemplate::kChatMlThinking; }

namespace {

// Token ids of a rendered conversation: special markers parsed as special tokens, message
// text never (so a user cannot forge a marker).
class ChatTokens {
 public:
  explicit ChatTokens(const Tokenizer& tok) : tok_(tok) {}
  void Special(std::string_view s) { Append(tok_.Encode(s, false, /*parse_special=*/true)); }
  void Plain(std::string_view s) { Append(tok_.Encode(s, false, /*parse_special=*/false)); }
  void Id(int32_t id) {
    if (id >= 0) out_.push_back(id);
  }
  const Tokenizer& tok() const { return tok_; }
  std::vector<int32_t> Take() { return std::move(out_); }

 private:
  void Append(const std::vector<int32_t>& ids) { out_.insert(out_.end(), ids.begin(), ids.end()); }
  const Tokenizer& tok_;
  std::vector<int32_t> out_;
};

void RenderLlama3(const Messages& messages, ChatTokens& out) {
  out.Id(out.tok().bos_id());
  for (const ChatMessage& m : messages) {
    out.Special("<|start_header_id|>");
    out.Plain(m.role);
    out.Special("<|end_header_id|>");
    out.Plain("\n\n" + Trim(m.content));
    out.Special("<|eot_id|>");
  }
  // The template opens the assistant's turn whatever add_generation_prompt says.
  out.Special("<|start_header_id|>");
  out.Plain("assistant");
  out.Special("<|end_header_id|>");
  out.Plain("\n\n");
}

// One ChatML turn: <|im_start|>{text}<|im_end|>\n.
void ChatMlTurn(const std::string& text, ChatTokens& out) {
  out.Special("<|im_start|>");
  out.Plain(text);
  out.Special("<|im_end|>");
  out.Plain("\n");
}

// Qwen3: the system turn lists the tools (after the system message, if any).
void ChatMlToolsTurn(const Messages& messages, const std::vector<std::string>& tools,
                     ChatTokens& out) {
  std::string sys = "system\n";
  if (!messages.empty() && messages[0].role == "system") sys += messages[0].content + "\n\n";
  sys +=
      "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
      "You are provided with function signatures within <tools></tools> XML tags:\n<tools>";
  for (const std::string& tool : tools) sys += "\n" + tool;
  sys +=
      "\n</tools>\n\nFor each function call, return a json object with function name and "
      "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": "
      "<function-name>, \"arguments\": <args-json-object>}\n</tool_call>";
  ChatMlTurn(sys, out);
}

void RenderChatMl(bool thinking, const Messages& messages, const ChatOptions& options,
                  ChatTokens& out) {
  const size_t last_user = LastUserQuery(messages);
  const bool tools = thinking && !options.tools.empty();
  const bool system_first = !messages.empty() && messages[0].role == "system";
  if (tools) ChatMlToolsTurn(messages, options.tools, out);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (tools && i == 0 && system_first) continue;  // already in the tools turn
    if (thinking && m.role == "tool") {
      // Consecutive tool results share one user turn of <tool_response> blocks.
      if (i == 0 || messages[i - 1].role != "tool") {
        out.Special("<|im_start|>");
        out.Plain("user");
      }
      out.Plain("\n<tool_response>\n" + m.content + "\n</tool_response>");
      if (i + 1 == messages.size() || messages[i + 1].role != "tool") {
        out.Special("<|im_end|>");
        out.Plain("\n");
      }
      continue;
    }
    std::string body = m.content;
    if (thinking && m.role == "assistant") {
      std::string answer;
      body = ThinkingAssistantContent(messages, i, last_user, &answer);
      // A newline before the first call only after answer text (not after a think block).
      body += ToolCallsText(m.tool_calls, !answer.empty());
    }
    ChatMlTurn(m.role + "\n" + body, out);
  }
  if (options.add_generation_prompt) {
    out.Special("<|im_start|>");
    out.Plain("assistant\n");
    if (thinking && options.enable_thinking == false) out.Plain("<think>\n\n</think>\n\n");
  }
}

// [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
void RenderLlama2(const Messages& messages, ChatTokens& out) {
  std::string system;
  bool first_user = true;
  for (const auto& [role, content, reasoning, calls] : messages) {
    if (role == "system") {
      system = content;
    } else if (role == "user") {
      out.Id(out.tok().bos_id());
      std::string text = "[INST] ";
      if (first_user && !system.empty()) text += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
      first_user = false;
      out.Plain(text + content + " [/INST]");
    } else {
      out.Plain(" " + content + " ");
      out.Id(out.tok().eos_id());
    }
  }
}

}  // namespace

std::vector<int32_t> RenderChat(ChatTemplate t, const Tokenizer& tok,
                                const std::vector<ChatMessage>& messages,
                                const ChatOptions& options) {
  ChatTokens out(tok);
  switch (t) {
    case ChatTemplate::kLlama3:
      RenderLlama3(messages, out);
      break;
    case ChatTemplate::kChatMl:
    case ChatTemplate::kChatMlThinking:
      RenderChatMl(t == ChatTemplate::kChatMlThinking, messages, options, out);
      break;
    case ChatTemplate::kLlama2:
      RenderLlama2(messages, out);
      break;
    case ChatTemplate::kNone:
      break;
  }
  return out.Take();
}

}  // namespace chorus

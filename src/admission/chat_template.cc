#include <string>

#include "chorus/admission/admission.h"
#include "chorus/tokenizer/utf8.h"

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

using Messages = std::vector<std::pair<std::string, std::string>>;

// Qwen3's last user query: the last user message that is not a tool response (else the last).
size_t LastUserQuery(const Messages& messages) {
  size_t last = messages.empty() ? 0 : messages.size() - 1;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& c = messages[i].second;
    const bool tool_response = c.starts_with("<tool_response>") && c.ends_with("</tool_response>");
    if (messages[i].first == "user" && !tool_response) last = i;
  }
  return last;
}

// Message i's text in a ChatML turn. Qwen3: assistant turns before the last user query keep
// only their answer; those after it show a <think> block when they are last or have reasoning.
std::string ChatMlContent(ChatTemplate t, const Messages& messages, size_t i, size_t last_user) {
  const auto& [role, content] = messages[i];
  if (t != ChatTemplate::kChatMlThinking || role != "assistant") return content;
  std::string reasoning, answer;
  SplitThinking(content, &reasoning, &answer);
  if (i > last_user && (i + 1 == messages.size() || !reasoning.empty())) {
    return "<think>\n" + std::string(StripNewlines(reasoning, true, true)) + "\n</think>\n\n" +
           std::string(StripNewlines(answer, true, false));
  }
  return answer;
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

std::vector<int32_t> RenderChat(ChatTemplate t, const Tokenizer& tok,
                                const std::vector<std::pair<std::string, std::string>>& messages) {
  std::vector<int32_t> out;
  auto special = [&](std::string_view s) {
    const auto ids = tok.Encode(s, false, /*parse_special=*/true);
    out.insert(out.end(), ids.begin(), ids.end());
  };
  auto plain = [&](std::string_view s) {
    const auto ids = tok.Encode(s, false, /*parse_special=*/false);
    out.insert(out.end(), ids.begin(), ids.end());
  };
  switch (t) {
    case ChatTemplate::kLlama3:
      if (tok.bos_id() >= 0) out.push_back(tok.bos_id());
      for (const auto& [role, content] : messages) {
        special("<|start_header_id|>");
        plain(role);
        special("<|end_header_id|>");
        plain("\n\n" + Trim(content));
        special("<|eot_id|>");
      }
      special("<|start_header_id|>");
      plain("assistant");
      special("<|end_header_id|>");
      plain("\n\n");
      break;
    case ChatTemplate::kChatMl:
    case ChatTemplate::kChatMlThinking: {
      const size_t last_user = LastUserQuery(messages);
      for (size_t i = 0; i < messages.size(); ++i) {
        special("<|im_start|>");
        plain(messages[i].first + "\n" + ChatMlContent(t, messages, i, last_user));
        special("<|im_end|>");
        plain("\n");
      }
      special("<|im_start|>");
      plain("assistant\n");
      break;
    }
    case ChatTemplate::kLlama2: {
      // [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] ...
      std::string system;
      bool first_user = true;
      for (const auto& [role, content] : messages) {
        if (role == "system") {
          system = content;
        } else if (role == "user") {
          if (tok.bos_id() >= 0) out.push_back(tok.bos_id());
          std::string text = "[INST] ";
          if (first_user && !system.empty()) text += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
          first_user = false;
          plain(text + content + " [/INST]");
        } else {
          plain(" " + content + " ");
          if (tok.eos_id() >= 0) out.push_back(tok.eos_id());
        }
      }
      break;
    }
    case ChatTemplate::kNone:
      break;
  }
  return out;
}

}  // namespace chorus

#include <string>

#include "chorus/admission/admission.h"

namespace chorus {

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
        plain("\n\n" + content);
        special("<|eot_id|>");
      }
      special("<|start_header_id|>");
      plain("assistant");
      special("<|end_header_id|>");
      plain("\n\n");
      break;
    case ChatTemplate::kChatMl:
    case ChatTemplate::kChatMlThinking: {
      // Qwen3: assistant turns before the last user turn drop their reasoning.
      size_t last_user = 0;
      for (size_t i = 0; i < messages.size(); ++i) {
        if (messages[i].first == "user") last_user = i;
      }
      for (size_t i = 0; i < messages.size(); ++i) {
        const auto& [role, content] = messages[i];
        std::string text = content;
        const size_t end_think = text.rfind("</think>");
        if (t == ChatTemplate::kChatMlThinking && role == "assistant" && i < last_user &&
            end_think != std::string::npos) {
          text = text.substr(end_think + 8);
          text.erase(0, text.find_first_not_of('\n') == std::string::npos
                            ? text.size()
                            : text.find_first_not_of('\n'));
        }
        special("<|im_start|>");
        plain(role + "\n" + text);
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

// Results -> OpenAI response JSON (ResponseJson) and Server-Sent Events (StreamEncoder),
// with tool calls recognized in chat answers.
#include <cctype>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chorus/core/str_cat.h"
#include "chorus/http/openai.h"
#include "openai_internal.h"

namespace chorus::http {
namespace {

using internal::AppendPythonJson;
using internal::ByAgent;
using internal::ChorusJson;
using internal::Dump;
using internal::json;
using internal::OpenAiFinish;
using internal::ParseBounded;
using internal::UsageJson;

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Tool calls the model wrote as Qwen3's template asks (<tool_call>{"name": ..., "arguments":
// {...}}</tool_call>, Hermes style): OpenAI tool_calls with the arguments as JSON text, and the
// text around them as the content. False (the text stays content) unless every block parses.
bool ExtractToolCalls(const std::string& text, std::string_view id, int choice,
                      std::string* content, json* calls) {
  static constexpr std::string_view kOpen = "<tool_call>", kClose = "</tool_call>";
  *calls = json::array();
  content->clear();
  size_t pos = 0;
  while (true) {
    const size_t open = text.find(kOpen, pos);
    if (open == std::string::npos) break;
    const size_t close = text.find(kClose, open + kOpen.size());
    if (close == std::string::npos) return false;  // cut off mid-call
    content->append(text, pos, open - pos);
    const std::string_view body = TrimWhitespace(
        std::string_view(text).substr(open + kOpen.size(), close - open - kOpen.size()));
    bool too_deep = false;
    const json j = ParseBounded(body, &too_deep);
    if (too_deep || j.is_discarded() || !j.is_object() || !j.contains("name") ||
        !j["name"].is_string())
      return false;
    // Arguments as the template writes them, so a client that sends the call back renders the
    // same text the model wrote.
    std::string args;
    if (!j.contains("arguments")) {
      args = "{}";
    } else if (j["arguments"].is_string()) {
      args = j["arguments"].get<std::string>();
    } else {
      AppendPythonJson(j["arguments"], &args);
    }
    calls->push_back({{"id", StrCat("call_", id, "_", choice, "_", calls->size())},
                      {"type", "function"},
                      {"function", {{"name", j["name"]}, {"arguments", std::move(args)}}}});
    pos = close + kClose.size();
  }
  content->append(text, pos, std::string::npos);
  *content = std::string(TrimWhitespace(*content));
  return !calls->empty();
}

// `id`: the response's id, which makes tool-call ids unique across turns.
json ChoiceJson(const OpenAiRequest& req, std::string_view id, int index, const std::string& text,
                FinishReason finish) {
  json c = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinish(finish)}};
  std::string content;
  json calls;
  if (req.endpoint == Endpoint::kChat && !req.input.chat.tools.empty() &&
      ExtractToolCalls(text, id, index, &content, &calls)) {
    c["message"] = {{"role", "assistant"},
                    {"content", content.empty() ? json(nullptr) : json(content)},
                    {"tool_calls", std::move(calls)}};
    // A cut-off answer stays "length" (a call may be missing); otherwise the model called tools.
    if (OpenAiFinish(finish) != std::string_view("length")) c["finish_reason"] = "tool_calls";
  } else if (req.endpoint == Endpoint::kChat) {
    c["message"] = {{"role", "assistant"}, {"content", text}};
  } else {
    c["text"] = text;
  }
  return c;
}

}  // namespace

std::string ResponseJson(const OpenAiRequest& req, const ResponseMeta& meta,
                         const GenerateResult& r) {
  json choices = json::array();
  if (req.merged || req.n == 1) {
    choices.push_back(ChoiceJson(req, meta.id, 0, r.text, r.finish));
  } else {
    int i = 0;
    for (const DraftResult* d : ByAgent(r)) {
      choices.push_back(ChoiceJson(req, meta.id, i++, d->text, d->finish));
    }
  }
  json out = {{"id", meta.id},
              {"object", req.endpoint == Endpoint::kChat ? "chat.completion" : "text_completion"},
              {"created", meta.created},
              {"model", meta.model},
              {"choices", std::move(choices)},
              {"usage", UsageJson(r)},
              {"chorus", ChorusJson(req, r)}};
  return Dump(out);
}

std::string StreamEncoder::Chunk(std::string choices_json, std::string_view extra) {
  std::string s =
      StrCat("data: {\"id\":", Dump(meta_.id), ",\"object\":\"",
             req_.endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion",
             "\",\"created\":", meta_.created, ",\"model\":", Dump(meta_.model),
             ",\"choices\":", choices_json);
  if (req_.include_usage) s += ",\"usage\":null";
  s += extra;
  s += "}\n\n";
  return s;
}

std::string StreamEncoder::Delta(int agent, std::string_view text) {
  const bool several = req_.merged && (req_.input.agents > 1 || req_.input.max_agents > 1);
  if (several) {
    if (!req_.input.return_drafts) return {};
    return Chunk(
        "[]", StrCat(",\"chorus\":", Dump(json{{"agent", agent}, {"delta", std::string(text)}})));
  }
  const int index = req_.merged ? 0 : agent;
  json choice = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", nullptr}};
  if (req_.endpoint == Endpoint::kChat) {
    if (role_sent_.size() <= static_cast<size_t>(index)) role_sent_.resize(index + 1, 0);
    choice["delta"] = {{"content", std::string(text)}};
    if (!role_sent_[index]) {
      choice["delta"]["role"] = "assistant";
      role_sent_[index] = 1;
    }
  } else {
    choice["text"] = std::string(text);
  }
  return Chunk(Dump(json::array({choice})));
}

std::string StreamEncoder::AgentFinished(const DraftResult& d) {
  if (req_.merged) return {};
  if (finished_.size() <= static_cast<size_t>(d.agent)) finished_.resize(d.agent + 1, 0);
  if (finished_[d.agent]) return {};
  finished_[d.agent] = 1;
  json choice = {
      {"index", d.agent}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinish(d.finish)}};
  if (req_.endpoint == Endpoint::kChat) {
    choice["delta"] = json::object();
  } else {
    choice["text"] = "";
  }
  return Chunk(Dump(json::array({choice})));
}

std::string StreamEncoder::Complete(const GenerateResult& r) {
  std::string out;
  if (req_.merged) {
    // One agent streamed its text already; several stream the merged answer here.
    const bool several = req_.input.agents > 1 || req_.input.max_agents > 1;
    json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinish(r.finish)}};
    const std::string text = several ? r.text : std::string();
    if (req_.endpoint == Endpoint::kChat) {
      choice["delta"] = {{"content", text}};
      if (role_sent_.empty() || !role_sent_[0]) choice["delta"]["role"] = "assistant";
    } else {
      choice["text"] = text;
    }
    out += Chunk(Dump(json::array({choice})), StrCat(",\"chorus\":", Dump(ChorusJson(req_, r))));
  } else {
    for (const DraftResult* d : ByAgent(r)) out += AgentFinished(*d);
  }
  if (req_.include_usage) {
    out += StrCat("data: ",
                  Dump(json{{"id", meta_.id},
                            {"object", req_.endpoint == Endpoint::kChat ? "chat.completion.chunk"
                                                                        : "text_completion"},
                            {"created", meta_.created},
                            {"model", meta_.model},
                            {"choices", json::array()},
                            {"usage", UsageJson(r)}}),
                  "\n\n");
  }
  out += "data: [DONE]\n\n";
  return out;
}

std::string StreamEncoder::ErrorFrame(const ApiError& e) {
  return StrCat("data: ", ErrorJson(e), "\n\n");
}

}  // namespace chorus::http

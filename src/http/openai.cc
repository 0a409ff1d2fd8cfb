#include "chorus/http/openai.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "chorus/core/str_cat.h"

namespace chorus::http {
namespace {

// Ordered: tool definitions and arguments keep the client's key order, which the chat
// template's tojson writes out (and responses keep a readable field order).
using json = nlohmann::ordered_json;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Parsing does not recurse, but dumping, copying and AppendPythonJson do: a body nested a
// million levels deep would overflow an HTTP thread's stack. Values deeper than this are
// dropped while parsing and the text is refused.
constexpr int kMaxJsonDepth = 64;

json ParseBounded(std::string_view text, bool* too_deep) {
  *too_deep = false;
  auto cb = [too_deep](int depth, json::parse_event_t, json&) {
    if (depth <= kMaxJsonDepth) return true;
    *too_deep = true;
    return false;
  };
  return json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
}

// Field readers: absent or null leaves the target as it is; a wrong type is an error naming
// the parameter (`prefix` + key).
class Reader {
 public:
  Reader(const json& obj, std::string prefix, ApiError* err) : obj_(obj), prefix_(std::move(prefix)), err_(err) {}
  bool ok() const { return ok_; }
  ApiError* error() const { return err_; }
  void MarkFailed() { ok_ = false; }
  bool Has(const char* key) const { return obj_.contains(key) && !obj_[key].is_null(); }
  const json& At(const char* key) const { return obj_[key]; }
  std::string Name(const char* key) const { return prefix_ + key; }

  void Fail(const std::string& param, const std::string& what) {
    if (!ok_) return;
    ok_ = false;
    err_->http_status = 400;
    err_->type = "invalid_request_error";
    err_->code = "invalid_value";
    err_->param = param;
    err_->message = StrCat(param, ": ", what);
  }
  void Number(const char* key, float* out) {
    if (!Has(key)) return;
    if (!At(key).is_number()) return Fail(Name(key), "must be a number");
    const double v = At(key).get<double>();
    if (!std::isfinite(v) || std::fabs(v) > 1e30) return Fail(Name(key), "must be a finite number");
    *out = static_cast<float>(v);
  }
  void Integer(const char* key, int64_t* out) {
    if (!Has(key)) return;
    const json& v = At(key);
    if (v.is_number_integer()) {
      *out = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX))
                                    : v.get<int64_t>();
      return;
    }
    if (v.is_number_float()) {  // 4.0 is an integer to JavaScript clients
      const double d = v.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) {
        *out = static_cast<int64_t>(d);
        return;
      }
    }
    Fail(Name(key), "must be an integer");
  }
  void Bool(const char* key, bool* out) {
    if (!Has(key)) return;
    if (!At(key).is_boolean()) return Fail(Name(key), "must be true or false");
    *out = At(key).get<bool>();
  }
  void String(const char* key, std::string* out) {
    if (!Has(key)) return;
    if (!At(key).is_string()) return Fail(Name(key), "must be a string");
    *out = At(key).get<std::string>();
  }
  // Refuses a parameter whose value would change the answer in a way Chorus does not do.
  void Unsupported(const char* key, const std::string& why) {
    if (!Has(key)) return;
    const json& v = At(key);
    const bool harmless = (v.is_boolean() && !v.get<bool>()) || (v.is_object() && v.empty()) ||
                          (v.is_array() && v.empty()) || (v.is_string() && v.get<std::string>().empty());
    if (!harmless) Fail(Name(key), why);
  }

 private:
  const json& obj_;
  std::string prefix_;
  ApiError* err_;
  bool ok_ = true;
};

// Python's json.dumps(x, ensure_ascii=False): ", " and ": " separators, keys in order, non-ASCII
// kept, control characters as \u00XX. What transformers' tojson writes into a chat template.
void AppendPythonJson(const json& j, std::string* out) {
  switch (j.type()) {
    case json::value_t::object: {
      *out += '{';
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!first) *out += ", ";
        first = false;
        AppendPythonJson(json(it.key()), out);
        *out += ": ";
        AppendPythonJson(it.value(), out);
      }
      *out += '}';
      break;
    }
    case json::value_t::array: {
      *out += '[';
      for (size_t i = 0; i < j.size(); ++i) {
        if (i > 0) *out += ", ";
        AppendPythonJson(j[i], out);
      }
      *out += ']';
      break;
    }
    case json::value_t::string: {
      *out += '"';
      for (const char ch : j.get_ref<const std::string&>()) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
          case '"': *out += "\\\""; break;
          case '\\': *out += "\\\\"; break;
          case '\n': *out += "\\n"; break;
          case '\r': *out += "\\r"; break;
          case '\t': *out += "\\t"; break;
          case '\b': *out += "\\b"; break;
          case '\f': *out += "\\f"; break;
          default:
            if (c < 0x20) {
              char buf[8];
              std::snprintf(buf, sizeof(buf), "\\u%04x", c);
              *out += buf;
            } else {
              *out += ch;
            }
        }
      }
      *out += '"';
      break;
    }
    case json::value_t::number_float: {
      const double d = j.get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 1e16) {
        // Python writes 2.0, not 2, and keeps the sign of -0.0.
        *out += StrCat(std::signbit(d) && d == 0 ? "-" : "", static_cast<int64_t>(d), ".0");
      } else {
        *out += j.dump();
      }
      break;
    }
    default:
      *out += j.dump();  // null, booleans, integers
  }
}

int MergeFromName(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  if (name == "vote") return 1;
  if (name == "confidence") return 2;
  if (name == "best_logprob") return 3;
  if (name == "first") return 4;
  if (name == "synthesize") return 5;
  return -1;
}

const char* MergeName(MergeStrategy m) {
  switch (m) {
    case MergeStrategy::kVote: return "vote";
    case MergeStrategy::kConfidence: return "confidence";
    case MergeStrategy::kBestLogprob: return "best_logprob";
    case MergeStrategy::kFirst: return "first";
    case MergeStrategy::kSynthesize: return "synthesize";
  }
  return "vote";
}

const char* FinishName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kEndOfText: return "end_of_text";
    case FinishReason::kBudget: return "budget";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kLowConfidence: return "low_confidence";
    case FinishReason::kConsensus: return "consensus";
    case FinishReason::kContext: return "context";
  }
  return "none";
}

// OpenAI knows "stop" and "length"; a draft cut by the budget or the context is "length".
const char* OpenAiFinish(FinishReason r) {
  return (r == FinishReason::kLength || r == FinishReason::kContext || r == FinishReason::kBudget) ? "length" : "stop";
}

void ParseChorus(Reader& top, OpenAiRequest* out) {
  const json& c = top.At("chorus");
  if (!c.is_object()) return top.Fail("chorus", "must be an object");
  Reader rr(c, "chorus.", top.error());
  GenerateInput& in = out->input;
  int64_t agents = 0, window = 0, budget = 0, priority = 0, min_agents = 0, max_agents = 0;
  rr.Integer("agents", &agents);
  rr.Integer("min_agents", &min_agents);
  rr.Integer("max_agents", &max_agents);
  in.agents = agents;
  in.min_agents = min_agents;
  in.max_agents = max_agents;
  if (rr.Has("merge")) {
    if (!rr.At("merge").is_string()) {
      rr.Fail("chorus.merge", "must be a string: vote, confidence, best_logprob, first or synthesize");
    } else {
      in.merge = MergeFromName(rr.At("merge").get<std::string>());
      if (in.merge < 0) rr.Fail("chorus.merge", "must be vote, confidence, best_logprob, first or synthesize");
    }
  }
  rr.Integer("latency_budget_ms", &budget);
  in.latency_budget_ms = budget;
  rr.String("answer_regex", &in.answer_regex);
  rr.Bool("return_drafts", &in.return_drafts);
  rr.Number("temperature_spread", &in.temperature_spread);
  rr.Number("confidence_threshold", &in.confidence_threshold);
  rr.Integer("confidence_window", &window);
  in.confidence_window = window;
  rr.Integer("priority", &priority);
  in.priority = priority;
  rr.String("cache_salt", &in.cache_salt);
  rr.String("request_id", &in.request_id);
  if (!rr.ok()) top.MarkFailed();
  out->merged = true;
}

// [{"type": "function", "function": {"name": ..., "arguments": "<JSON text>" or an object}}]
void ParseToolCalls(Reader& top, const json& calls, const std::string& at, ChatMessage* msg) {
  if (!calls.is_array()) return top.Fail(at, "must be an array");
  for (size_t k = 0; k < calls.size(); ++k) {
    const std::string where = StrCat(at, "[", k, "]");
    const json& c = calls[k];
    const json* f = c.is_object() && c.contains("function") ? &c["function"] : &c;
    if (!f->is_object() || !f->contains("name") || !(*f)["name"].is_string()) {
      return top.Fail(where + ".function.name", "must be a string");
    }
    ToolCall call;
    call.name = (*f)["name"].get<std::string>();
    const json args = f->contains("arguments") ? (*f)["arguments"] : json::object();
    if (args.is_string()) {
      call.arguments = args.get<std::string>();  // OpenAI's form: JSON text, rendered as sent
    } else if (args.is_object()) {
      AppendPythonJson(args, &call.arguments);
    } else {
      return top.Fail(where + ".function.arguments", "must be a JSON string or an object");
    }
    msg->tool_calls.push_back(std::move(call));
  }
}

// chat_template_kwargs (vLLM's extension) and add_generation_prompt: the template's options.
void ParseChatOptions(Reader& top, GenerateInput* in) {
  top.Bool("add_generation_prompt", &in->chat.add_generation_prompt);
  if (top.Has("chat_template_kwargs")) {
    const json& kw = top.At("chat_template_kwargs");
    if (!kw.is_object()) return top.Fail("chat_template_kwargs", "must be an object");
    for (auto it = kw.begin(); it != kw.end(); ++it) {
      const std::string name = "chat_template_kwargs." + it.key();
      if (it.key() != "enable_thinking" && it.key() != "add_generation_prompt") {
        return top.Fail(name, "is not a template option Chorus knows (enable_thinking, add_generation_prompt)");
      }
      if (!it.value().is_boolean()) return top.Fail(name, "must be true or false");
      if (it.key() == "enable_thinking") {
        in->chat.enable_thinking = it.value().get<bool>();
      } else {
        in->chat.add_generation_prompt = it.value().get<bool>();
      }
    }
  }
  if (top.Has("tools")) {
    const json& tools = top.At("tools");
    if (!tools.is_array()) return top.Fail("tools", "must be an array of tool definitions");
    for (size_t i = 0; i < tools.size(); ++i) {
      if (!tools[i].is_object()) return top.Fail(StrCat("tools[", i, "]"), "must be an object");
      AppendPythonJson(tools[i], &in->chat.tools.emplace_back());
    }
  }
  if (top.Has("tool_choice")) {  // the model decides; forcing a call is not supported
    const json& tc = top.At("tool_choice");
    if (!(tc.is_string() && (tc == "auto" || tc == "none"))) {
      top.Fail("tool_choice", "only \"auto\" and \"none\" are supported (the model decides)");
    } else if (tc == "none") {
      in->chat.tools.clear();
    }
  }
}

bool ParseMessages(Reader& top, GenerateInput* in) {
  const json& msgs = top.At("messages");
  if (!msgs.is_array() || msgs.empty()) {
    top.Fail("messages", "must be a non-empty array of {role, content}");
    return false;
  }
  for (size_t i = 0; i < msgs.size() && top.ok(); ++i) {
    const std::string at = StrCat("messages[", i, "]");
    const json& m = msgs[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      top.Fail(at + ".role", "must be a string: system, developer, user or assistant");
      break;
    }
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      top.Fail(at + ".role", StrCat("'", role.substr(0, 32), "' is not system, developer, user, assistant or tool"));
      break;
    }
    std::string content;
    const json c = m.contains("content") ? m["content"] : json();
    if (c.is_string()) {
      content = c.get<std::string>();
    } else if (c.is_array()) {  // content parts: text only
      for (const json& part : c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
          top.Fail(at + ".content", "parts must be {\"type\": \"text\", \"text\": ...} (no images or audio)");
          break;
        }
        content += part["text"].get<std::string>();
      }
    } else if (!c.is_null()) {
      top.Fail(at + ".content", "must be a string or an array of text parts");
    }
    ChatMessage& msg = in->messages.emplace_back(std::move(role), std::move(content));
    if (m.contains("reasoning_content") && !m["reasoning_content"].is_null()) {
      if (!m["reasoning_content"].is_string()) {
        top.Fail(at + ".reasoning_content", "must be a string");
        break;
      }
      msg.reasoning_content = m["reasoning_content"].get<std::string>();
    }
    if (m.contains("tool_calls") && !m["tool_calls"].is_null()) {
      ParseToolCalls(top, m["tool_calls"], at + ".tool_calls", &msg);
    }
  }
  return top.ok();
}

json UsageJson(const GenerateResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_prompt_tokens}}}};
}

json DraftJson(const DraftResult& d) {
  return {{"agent", d.agent},
          {"text", d.text},
          {"num_tokens", d.num_tokens},
          {"mean_logprob", d.num_tokens > 0 ? d.mean_logprob() : 0.0},
          {"finish_reason", FinishName(d.finish)},
          {"answer", d.answer},
          {"confidence", d.confidence}};
}

json ChorusJson(const OpenAiRequest& req, const GenerateResult& r) {
  json c = {{"request_id", r.request_id},
            {"finish_reason", FinishName(r.finish)},
            {"budget_cut", r.budget_cut},
            {"timing", {{"queue_ms", r.queue_ms}, {"ttft_ms", r.ttft_ms}, {"total_ms", r.total_ms}, {"budget_ms", r.budget_ms}}},
            {"usage", {{"computed_prompt_tokens", r.computed_prompt_tokens}, {"cached_prompt_tokens", r.cached_prompt_tokens}}}};
  if (req.merged) {
    json votes = json::object();
    for (const auto& [answer, v] : r.merge.votes) votes[answer] = v;
    c["agents"] = r.agents;
    c["merge"] = {{"strategy", MergeName(r.merge.strategy)}, {"winner", r.merge.winner}, {"votes", votes}};
    if (req.input.return_drafts) {
      json drafts = json::array();
      for (const auto& d : r.drafts) drafts.push_back(DraftJson(d));
      c["drafts"] = std::move(drafts);
    }
  }
  return c;
}

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Tool calls the model wrote as Qwen3's template asks (<tool_call>{"name": ..., "arguments":
// {...}}</tool_call>, Hermes style): OpenAI tool_calls with the arguments as JSON text, and the
// text around them as the content. False (the text stays content) unless every block parses.
bool ExtractToolCalls(const std::string& text, std::string_view id, int choice, std::string* content, json* calls) {
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
    const std::string_view body =
        TrimWhitespace(std::string_view(text).substr(open + kOpen.size(), close - open - kOpen.size()));
    bool too_deep = false;
    const json j = ParseBounded(body, &too_deep);
    if (too_deep || j.is_discarded() || !j.is_object() || !j.contains("name") || !j["name"].is_string()) return false;
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
json ChoiceJson(const OpenAiRequest& req, std::string_view id, int index, const std::string& text, FinishReason finish) {
  json c = {{"index", index}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinish(finish)}};
  std::string content;
  json calls;
  if (req.endpoint == Endpoint::kChat && !req.input.chat.tools.empty() &&
      ExtractToolCalls(text, id, index, &content, &calls)) {
    c["message"] = {{"role", "assistant"}, {"content", content.empty() ? json(nullptr) : json(content)},
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

// The drafts in agent order (plain mode: choice i is agent i).
std::vector<const DraftResult*> ByAgent(const GenerateResult& r) {
  std::vector<const DraftResult*> out;
  for (const auto& d : r.drafts) out.push_back(&d);
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->agent < b->agent; });
  return out;
}

// Admission's field names -> OpenAI's parameter names.
std::string ParamName(std::string_view field, bool merged) {
  static const std::pair<std::string_view, std::string_view> kMap[] = {
      {"sampling.", ""}, {"latency_budget_ms", "chorus.latency_budget_ms"}, {"priority", "chorus.priority"},
      {"cache_salt", "chorus.cache_salt"}, {"request_id", "chorus.request_id"}};
  if (field == "reasoning.agents") return merged ? "chorus.agents" : "n";
  if (field.substr(0, 10) == "reasoning.") return StrCat("chorus.", field.substr(10));
  for (const auto& [from, to] : kMap) {
    if (field.substr(0, from.size()) == from) return StrCat(to, field.substr(from.size()));
  }
  return std::string(field);
}

}  // namespace

bool ParseRequest(std::string_view body, Endpoint endpoint, int max_agents, OpenAiRequest* out, ApiError* error) {
  *out = OpenAiRequest();
  out->endpoint = endpoint;
  bool too_deep = false;
  json j = ParseBounded(body, &too_deep);
  Reader top(j, "", error);
  if (too_deep) {
    top.Fail("body", StrCat("nests JSON deeper than ", kMaxJsonDepth, " levels"));
    return false;
  }
  if (j.is_discarded() || !j.is_object()) {
    top.Fail("body", "is not a JSON object");
    return false;
  }
  GenerateInput& in = out->input;
  in.has_sampling = true;
  in.temperature = 1;
  if (!top.Has("model")) {
    top.Fail("model", "is required (GET /v1/models lists it)");
    return false;
  }
  top.String("model", &out->model);
  top.Number("temperature", &in.temperature);
  top.Number("top_p", &in.top_p);
  top.Number("presence_penalty", &in.presence_penalty);
  top.Number("frequency_penalty", &in.frequency_penalty);
  // vLLM's extensions of the OpenAI API, accepted where they mean the same thing.
  top.Integer("top_k", &in.top_k);
  top.Number("min_p", &in.min_p);
  top.Number("repetition_penalty", &in.repetition_penalty);
  int64_t seed = 0, n = 1, max_tokens = 0;
  if (top.Has("seed")) {
    top.Integer("seed", &seed);
    // Any seed is deterministic, 0 included (Chorus's 0 means "from the request id").
    in.seed = seed == 0 ? 0x9e3779b97f4a7c15ull : static_cast<uint64_t>(seed);
  }
  top.Integer("max_tokens", &max_tokens);
  if (endpoint == Endpoint::kChat) top.Integer("max_completion_tokens", &max_tokens);
  if (top.ok() && (top.Has("max_tokens") || top.Has("max_completion_tokens")) && max_tokens <= 0) {
    top.Fail(top.Has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens", "must be at least 1");
  }
  in.max_tokens = max_tokens;
  top.Integer("n", &n);
  top.Bool("stream", &out->stream);
  if (top.Has("stream_options")) {
    if (!top.At("stream_options").is_object()) {
      top.Fail("stream_options", "must be an object");
    } else {
      Reader so(top.At("stream_options"), "stream_options.", error);
      so.Bool("include_usage", &out->include_usage);
      if (!so.ok()) return false;
    }
  }
  if (top.Has("stop")) {
    const json& s = top.At("stop");
    if (s.is_string()) {
      in.stop.push_back(s.get<std::string>());
    } else if (s.is_array() && std::all_of(s.begin(), s.end(), [](const json& e) { return e.is_string(); })) {
      for (const json& e : s) in.stop.push_back(e.get<std::string>());
    } else {
      top.Fail("stop", "must be a string or an array of strings");
    }
  }
  top.Unsupported("logprobs", "token logprobs are not returned (use chorus.return_drafts for each draft's mean logprob)");
  top.Unsupported("top_logprobs", "token logprobs are not returned");
  top.Unsupported("logit_bias", "is not supported");
  if (endpoint != Endpoint::kChat) top.Unsupported("tools", "is for chat completions");
  top.Unsupported("functions", "function calling is not supported");
  top.Unsupported("echo", "is not supported");
  top.Unsupported("suffix", "is not supported");
  if (top.Has("best_of") && !(top.At("best_of").is_number_integer() && top.At("best_of").get<int64_t>() <= 1)) {
    top.Fail("best_of", "is not supported (use chorus.agents with merge best_logprob)");
  }
  if (top.Has("response_format") && !(top.At("response_format").is_object() &&
                                       top.At("response_format").value("type", "") == "text")) {
    top.Fail("response_format", "only {\"type\": \"text\"} is supported");
  }
  if (endpoint == Endpoint::kChat) {
    if (!top.Has("messages")) {
      top.Fail("messages", "is required");
    } else if (top.ok()) {
      ParseMessages(top, &in);
      if (top.ok()) ParseChatOptions(top, &in);
    }
  } else {
    if (!top.Has("prompt")) {
      top.Fail("prompt", "is required");
    } else {
      const json& p = top.At("prompt");
      if (p.is_string()) {
        in.prompt = p.get<std::string>();
      } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
        in.prompt = p[0].get<std::string>();
      } else {
        top.Fail("prompt", "must be a string (one prompt per request; token arrays are not supported)");
      }
    }
  }
  if (top.Has("chorus")) ParseChorus(top, out);
  if (!top.ok()) return false;
  if (n < 1 || n > max_agents) {
    top.Fail("n", StrCat("must be in [1, ", max_agents, "] (max_agents_per_request), got ", n));
    return false;
  }
  if (out->merged) {
    if (n != 1) {
      top.Fail("n", "must be 1 with the chorus extension: the agents' drafts are merged into one choice");
      return false;
    }
  } else {
    // n independent choices: n agents whose drafts all run to their own end.
    out->n = static_cast<int>(n);
    in.agents = n;
    in.merge = 3;  // BEST_LOGPROB: no vote, no early stop
    in.return_drafts = true;
  }
  in.stream = out->stream;
  return true;
}

ApiError ToApiError(const absl::Status& s, bool merged) {
  ApiError e;
  e.message = std::string(s.message());
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange: {
      e.http_status = 400;
      e.type = "invalid_request_error";
      e.code = "invalid_value";
      const size_t colon = e.message.find(": ");
      if (colon != std::string::npos && colon < 64 && e.message.find(' ') > colon) {
        e.param = ParamName(std::string_view(e.message).substr(0, colon), merged);
        e.message = StrCat(e.param, e.message.substr(colon));
      }
      break;
    }
    case absl::StatusCode::kUnauthenticated:
      e.http_status = 401;
      e.type = "authentication_error";
      e.code = "invalid_api_key";
      break;
    case absl::StatusCode::kPermissionDenied:
      e.http_status = 403;
      e.type = "permission_error";
      break;
    case absl::StatusCode::kNotFound:
      e.http_status = 404;
      e.type = "invalid_request_error";
      e.code = "model_not_found";
      e.param = "model";
      break;
    case absl::StatusCode::kAlreadyExists:
      e.http_status = 409;
      e.type = "invalid_request_error";
      e.param = "chorus.request_id";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.http_status = 429;
      e.type = "rate_limit_error";
      e.code = "rate_limit_exceeded";
      break;
    case absl::StatusCode::kUnavailable:
      e.http_status = 503;
      e.type = "server_error";
      e.code = "service_unavailable";
      break;
    case absl::StatusCode::kDeadlineExceeded:
      e.http_status = 504;
      e.type = "server_error";
      e.code = "latency_budget_exceeded";
      break;
    case absl::StatusCode::kCancelled:
      e.http_status = 499;
      e.type = "server_error";
      e.code = "cancelled";
      break;
    default:
      e.http_status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

bool ToPythonStyleJson(std::string_view json_text, std::string* out) {
  bool too_deep = false;
  const json j = ParseBounded(json_text, &too_deep);
  if (too_deep || j.is_discarded()) return false;
  out->clear();
  AppendPythonJson(j, out);
  return true;
}

std::string ErrorJson(const ApiError& e) {
  json err = {{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return Dump(json{{"error", err}});
}

std::string ModelJson(std::string_view model_id, int64_t created) {
  return Dump(json{{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "chorus"}});
}

std::string ModelListJson(std::string_view model_id, int64_t created) {
  return Dump(json{{"object", "list"}, {"data", json::array({json::parse(ModelJson(model_id, created))})}});
}

std::string ResponseJson(const OpenAiRequest& req, const ResponseMeta& meta, const GenerateResult& r) {
  json choices = json::array();
  if (req.merged || req.n == 1) {
    choices.push_back(ChoiceJson(req, meta.id, 0, r.text, r.finish));
  } else {
    int i = 0;
    for (const DraftResult* d : ByAgent(r)) choices.push_back(ChoiceJson(req, meta.id, i++, d->text, d->finish));
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
  std::string s = StrCat("data: {\"id\":", Dump(meta_.id), ",\"object\":\"",
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
    return Chunk("[]", StrCat(",\"chorus\":", Dump(json{{"agent", agent}, {"delta", std::string(text)}})));
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
  json choice = {{"index", d.agent}, {"logprobs", nullptr}, {"finish_reason", OpenAiFinish(d.finish)}};
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
    out += StrCat("data: ", Dump(json{{"id", meta_.id},
                                      {"object", req_.endpoint == Endpoint::kChat ? "chat.completion.chunk" : "text_completion"},
                                      {"created", meta_.created},
                                      {"model", meta_.model},
                                      {"choices", json::array()},
                                      {"usage", UsageJson(r)}}),
                  "\n\n");
  }
  out += "data: [DONE]\n\n";
  return out;
}

std::string StreamEncoder::ErrorFrame(const ApiError& e) { return StrCat("data: ", ErrorJson(e), "\n\n"); }

}  // namespace chorus::http

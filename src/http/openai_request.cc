// OpenAI request bodies -> OpenAiRequest: every field type-checked, errors naming OpenAI's
// parameter (the first error found wins).
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>

#include "chorus/core/str_cat.h"
#include "chorus/http/openai.h"
#include "openai_internal.h"

namespace chorus::http {
namespace {

using internal::AppendPythonJson;
using internal::json;
using internal::kMaxJsonDepth;
using internal::ParseBounded;

// Field readers: absent or null leaves the target as it is; a wrong type is an error naming
// the parameter (`prefix` + key).
class Reader {
 public:
  Reader(const json& obj, std::string prefix, ApiError* err)
      : obj_(obj), prefix_(std::move(prefix)), err_(err) {}
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
      *out = v.is_number_unsigned()
                 ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), INT64_MAX))
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
                          (v.is_array() && v.empty()) ||
                          (v.is_string() && v.get<std::string>().empty());
    if (!harmless) Fail(Name(key), why);
  }

 private:
  const json& obj_;
  std::string prefix_;
  ApiError* err_;
  bool ok_ = true;
};

int MergeFromName(std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return std::tolower(c); });
  if (name == "vote") return 1;
  if (name == "confidence") return 2;
  if (name == "best_logprob") return 3;
  if (name == "first") return 4;
  if (name == "synthesize") return 5;
  return -1;
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
      rr.Fail("chorus.merge",
              "must be a string: vote, confidence, best_logprob, first or synthesize");
    } else {
      in.merge = MergeFromName(rr.At("merge").get<std::string>());
      if (in.merge < 0) {
        rr.Fail("chorus.merge", "must be vote, confidence, best_logprob, first or synthesize");
      }
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
        return top.Fail(
            name, "is not a template option Chorus knows (enable_thinking, add_generation_prompt)");
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
      top.Fail(at + ".role", StrCat("'", role.substr(0, 32),
                                    "' is not system, developer, user, assistant or tool"));
      break;
    }
    std::string content;
    const json c = m.contains("content") ? m["content"] : json();
    if (c.is_string()) {
      content = c.get<std::string>();
    } else if (c.is_array()) {  // content parts: text only
      for (const json& part : c) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string()) {
          top.Fail(at + ".content",
                   "parts must be {\"type\": \"text\", \"text\": ...} (no images or audio)");
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

// Sampling, seed and the token limit; the model name is read before.
void ParseSampling(Reader& top, Endpoint endpoint, GenerateInput* in) {
  top.Number("temperature", &in->temperature);
  top.Number("top_p", &in->top_p);
  top.Number("presence_penalty", &in->presence_penalty);
  top.Number("frequency_penalty", &in->frequency_penalty);
  // vLLM's extensions of the OpenAI API, accepted where they mean the same thing.
  top.Integer("top_k", &in->top_k);
  top.Number("min_p", &in->min_p);
  top.Number("repetition_penalty", &in->repetition_penalty);
  int64_t seed = 0, max_tokens = 0;
  if (top.Has("seed")) {
    top.Integer("seed", &seed);
    // Any seed is deterministic, 0 included (Chorus's 0 means "from the request id").
    in->seed = seed == 0 ? 0x9e3779b97f4a7c15ull : static_cast<uint64_t>(seed);
  }
  top.Integer("max_tokens", &max_tokens);
  if (endpoint == Endpoint::kChat) top.Integer("max_completion_tokens", &max_tokens);
  if (top.ok() && (top.Has("max_tokens") || top.Has("max_completion_tokens")) && max_tokens <= 0) {
    top.Fail(top.Has("max_completion_tokens") ? "max_completion_tokens" : "max_tokens",
             "must be at least 1");
  }
  in->max_tokens = max_tokens;
}

// "stream" and "stream_options"; false when stream_options has a bad field.
bool ParseStreaming(Reader& top, OpenAiRequest* out, ApiError* error) {
  top.Bool("stream", &out->stream);
  if (!top.Has("stream_options")) return true;
  if (!top.At("stream_options").is_object()) {
    top.Fail("stream_options", "must be an object");
    return true;
  }
  Reader so(top.At("stream_options"), "stream_options.", error);
  so.Bool("include_usage", &out->include_usage);
  return so.ok();
}

void ParseStop(Reader& top, GenerateInput* in) {
  if (!top.Has("stop")) return;
  const json& s = top.At("stop");
  if (s.is_string()) {
    in->stop.push_back(s.get<std::string>());
  } else if (s.is_array() &&
             std::all_of(s.begin(), s.end(), [](const json& e) { return e.is_string(); })) {
    for (const json& e : s) in->stop.push_back(e.get<std::string>());
  } else {
    top.Fail("stop", "must be a string or an array of strings");
  }
}

// Parameters whose values would change the answer in ways Chorus does not do.
void RefuseUnsupported(Reader& top, Endpoint endpoint) {
  top.Unsupported("logprobs",
                  "token logprobs are not returned (use chorus.return_drafts for each draft's "
                  "mean logprob)");
  top.Unsupported("top_logprobs", "token logprobs are not returned");
  top.Unsupported("logit_bias", "is not supported");
  if (endpoint != Endpoint::kChat) top.Unsupported("tools", "is for chat completions");
  top.Unsupported("functions", "function calling is not supported");
  top.Unsupported("echo", "is not supported");
  top.Unsupported("suffix", "is not supported");
  if (top.Has("best_of") &&
      !(top.At("best_of").is_number_integer() && top.At("best_of").get<int64_t>() <= 1)) {
    top.Fail("best_of", "is not supported (use chorus.agents with merge best_logprob)");
  }
  if (top.Has("response_format") && !(top.At("response_format").is_object() &&
                                      top.At("response_format").value("type", "") == "text")) {
    top.Fail("response_format", "only {\"type\": \"text\"} is supported");
  }
}

// The input: chat messages (with the template's options) or a completion prompt.
void ParseInput(Reader& top, Endpoint endpoint, GenerateInput* in) {
  if (endpoint == Endpoint::kChat) {
    if (!top.Has("messages")) {
      top.Fail("messages", "is required");
    } else if (top.ok()) {
      ParseMessages(top, in);
      if (top.ok()) ParseChatOptions(top, in);
    }
    return;
  }
  if (!top.Has("prompt")) return top.Fail("prompt", "is required");
  const json& p = top.At("prompt");
  if (p.is_string()) {
    in->prompt = p.get<std::string>();
  } else if (p.is_array() && p.size() == 1 && p[0].is_string()) {
    in->prompt = p[0].get<std::string>();
  } else {
    top.Fail("prompt", "must be a string (one prompt per request; token arrays are not supported)");
  }
}

// `n` choices: n independent agents (plain mode), or exactly 1 with the chorus extension.
bool ApplyChoices(Reader& top, int64_t n, int max_agents, OpenAiRequest* out) {
  GenerateInput& in = out->input;
  if (n < 1 || n > max_agents) {
    top.Fail("n", StrCat("must be in [1, ", max_agents, "] (max_agents_per_request), got ", n));
    return false;
  }
  if (out->merged) {
    if (n != 1) {
      top.Fail("n",
               "must be 1 with the chorus extension: the agents' drafts are merged into one "
               "choice");
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

}  // namespace

bool ParseRequest(std::string_view body, Endpoint endpoint, int max_agents, OpenAiRequest* out,
                  ApiError* error) {
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
  ParseSampling(top, endpoint, &in);
  int64_t n = 1;
  top.Integer("n", &n);
  if (!ParseStreaming(top, out, error)) return false;
  ParseStop(top, &in);
  RefuseUnsupported(top, endpoint);
  ParseInput(top, endpoint, &in);
  if (top.Has("chorus")) ParseChorus(top, out);
  if (!top.ok()) return false;
  return ApplyChoices(top, n, max_agents, out);
}

}  // namespace chorus::http

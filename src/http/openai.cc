// The OpenAI wire format's shared JSON pieces, error objects and model objects. Requests are
// parsed in openai_request.cc; responses and streams are written in openai_response.cc.
#include "chorus/http/openai.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include "chorus/core/str_cat.h"
#include "openai_internal.h"

namespace chorus::http {
namespace internal {
namespace {

// A JSON string as Python writes it (ensure_ascii=False).
void AppendPythonString(const std::string& s, std::string* out) {
  *out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        *out += "\\\"";
        break;
      case '\\':
        *out += "\\\\";
        break;
      case '\n':
        *out += "\\n";
        break;
      case '\r':
        *out += "\\r";
        break;
      case '\t':
        *out += "\\t";
        break;
      case '\b':
        *out += "\\b";
        break;
      case '\f':
        *out += "\\f";
        break;
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
}

const char* MergeName(MergeStrategy m) {
  switch (m) {
    case MergeStrategy::kVote:
      return "vote";
    case MergeStrategy::kConfidence:
      return "confidence";
    case MergeStrategy::kBestLogprob:
      return "best_logprob";
    case MergeStrategy::kFirst:
      return "first";
    case MergeStrategy::kSynthesize:
      return "synthesize";
  }
  return "vote";
}

const char* FinishName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone:
      return "none";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kEndOfText:
      return "end_of_text";
    case FinishReason::kBudget:
      return "budget";
    case FinishReason::kCancelled:
      return "cancelled";
    case FinishReason::kLowConfidence:
      return "low_confidence";
    case FinishReason::kConsensus:
      return "consensus";
    case FinishReason::kContext:
      return "context";
  }
  return "none";
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

// Admission's field names -> OpenAI's parameter names.
std::string ParamName(std::string_view field, bool merged) {
  static const std::pair<std::string_view, std::string_view> kMap[] = {
      {"sampling.", ""},
      {"latency_budget_ms", "chorus.latency_budget_ms"},
      {"priority", "chorus.priority"},
      {"cache_salt", "chorus.cache_salt"},
      {"request_id", "chorus.request_id"}};
  if (field == "reasoning.agents") return merged ? "chorus.agents" : "n";
  if (field.substr(0, 10) == "reasoning.") return StrCat("chorus.", field.substr(10));
  for (const auto& [from, to] : kMap) {
    if (field.substr(0, from.size()) == from) return StrCat(to, field.substr(from.size()));
  }
  return std::string(field);
}

}  // namespace

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json ParseBounded(std::string_view text, bool* too_deep) {
  *too_deep = false;
  auto cb = [too_deep](int depth, json::parse_event_t, json&) {
    if (depth <= kMaxJsonDepth) return true;
    *too_deep = true;
    return false;
  };
  return json::parse(text.begin(), text.end(), cb, /*allow_exceptions=*/false);
}

void AppendPythonJson(const json& j, std::string* out) {
  switch (j.type()) {
    case json::value_t::object: {
      *out += '{';
      bool first = true;
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (!first) *out += ", ";
        first = false;
        AppendPythonString(it.key(), out);
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
    case json::value_t::string:
      AppendPythonString(j.get_ref<const std::string&>(), out);
      break;
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

const char* OpenAiFinish(FinishReason r) {
  return (r == FinishReason::kLength || r == FinishReason::kContext || r == FinishReason::kBudget)
             ? "length"
             : "stop";
}

json UsageJson(const GenerateResult& r) {
  return {{"prompt_tokens", r.prompt_tokens},
          {"completion_tokens", r.completion_tokens},
          {"total_tokens", r.prompt_tokens + r.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", r.cached_prompt_tokens}}}};
}

json ChorusJson(const OpenAiRequest& req, const GenerateResult& r) {
  json c = {{"request_id", r.request_id},
            {"finish_reason", FinishName(r.finish)},
            {"budget_cut", r.budget_cut},
            {"timing",
             {{"queue_ms", r.queue_ms},
              {"ttft_ms", r.ttft_ms},
              {"total_ms", r.total_ms},
              {"budget_ms", r.budget_ms}}},
            {"usage",
             {{"computed_prompt_tokens", r.computed_prompt_tokens},
              {"cached_prompt_tokens", r.cached_prompt_tokens}}}};
  if (req.merged) {
    json votes = json::object();
    for (const auto& [answer, v] : r.merge.votes) votes[answer] = v;
    c["agents"] = r.agents;
    c["merge"] = {
        {"strategy", MergeName(r.merge.strategy)}, {"winner", r.merge.winner}, {"votes", votes}};
    if (req.input.return_drafts) {
      json drafts = json::array();
      for (const auto& d : r.drafts) drafts.push_back(DraftJson(d));
      c["drafts"] = std::move(drafts);
    }
  }
  return c;
}

std::vector<const DraftResult*> ByAgent(const GenerateResult& r) {
  std::vector<const DraftResult*> out;
  for (const auto& d : r.drafts) out.push_back(&d);
  std::sort(out.begin(), out.end(), [](auto* a, auto* b) { return a->agent < b->agent; });
  return out;
}

}  // namespace internal

using internal::AppendPythonJson;
using internal::Dump;
using internal::json;
using internal::ParamName;
using internal::ParseBounded;

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
  return Dump(
      json{{"id", model_id}, {"object", "model"}, {"created", created}, {"owned_by", "chorus"}});
}

std::string ModelListJson(std::string_view model_id, int64_t created) {
  return Dump(
      json{{"object", "list"}, {"data", json::array({json::parse(ModelJson(model_id, created))})}});
}

}  // namespace chorus::http

#include "chorus/admission/admission.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <string>

#include "chorus/admission/answer_regex.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/kv_cache/block_manager.h"

namespace chorus {
namespace {

absl::Status Invalid(std::string_view field, const std::string& what) {
  return absl::InvalidArgumentError(StrCat(field, ": ", what));
}

template <typename T>
absl::Status CheckRange(std::string_view field, T v, T lo, T hi) {
  if (!(v >= lo && v <= hi)) {  // also rejects NaN
    return Invalid(field, StrCat("must be in [", lo, ", ", hi, "], got ", v));
  }
  return absl::OkStatus();
}

// 0 (off) or [lo, hi]: below `lo`, dividing logits by the value can overflow a float.
absl::Status CheckZeroOrRange(std::string_view field, float v, float lo, float hi,
                              std::string_view zero_means) {
  if (v == 0 || (v >= lo && v <= hi)) return absl::OkStatus();  // NaN fails both
  return Invalid(field, StrCat("must be 0 (", zero_means, ") or in [", lo, ", ", hi, "], got ", v));
}

// The tool calls of assistant message i; adds their bytes to `bytes`.
absl::Status ValidateToolCalls(const ChatMessage& m, size_t i, ChatTemplate chat, size_t* bytes) {
  const std::string field = StrCat("messages[", i, "].tool_calls");
  if (m.role != "assistant") return Invalid(field, "only assistant messages carry tool calls");
  if (!ChatTemplateHasToolCalls(chat)) {
    return Invalid(field, "this model's chat template does not render tool calls");
  }
  if (m.tool_calls.size() > 64) return Invalid(field, "at most 64 tool calls per message");
  for (size_t k = 0; k < m.tool_calls.size(); ++k) {
    if (m.tool_calls[k].name.empty()) {
      return Invalid(StrCat("messages[", i, "].tool_calls[", k, "].name"), "is empty");
    }
    *bytes += m.tool_calls[k].name.size() + m.tool_calls[k].arguments.size();
  }
  return absl::OkStatus();
}

// Roles, tool calls and sizes of a chat request against what the model's template renders.
absl::Status ValidateMessages(const GenerateInput& in, ChatTemplate chat, int64_t max_bytes) {
  for (size_t i = 0; i < in.messages.size() && i < 256; ++i) {
    const std::string& role = in.messages[i].role;
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Invalid(StrCat("messages[", i, "].role"),
                     StrCat("'", role.substr(0, 32), "' is not system, user, assistant or tool"));
    }
  }
  if (chat == ChatTemplate::kNone) {
    return Invalid("messages",
                   "the model has no recognised chat template (llama2, llama3, chatml, qwen3); "
                   "send prompt instead");
  }
  if (in.messages.size() > 256) return Invalid("messages", "at most 256 messages");
  size_t bytes = 0;
  for (size_t i = 0; i < in.messages.size(); ++i) {
    const ChatMessage& m = in.messages[i];
    if (!ChatTemplateHasRole(chat, m.role)) {
      return Invalid(StrCat("messages[", i, "].role"),
                     "this model's chat template has no tool role");
    }
    if (!m.tool_calls.empty()) CHORUS_RETURN_IF_ERROR(ValidateToolCalls(m, i, chat, &bytes));
    bytes += m.content.size() + (m.reasoning_content ? m.reasoning_content->size() : 0);
  }
  if (!in.chat.tools.empty()) {
    if (!ChatTemplateListsTools(chat)) {
      return Invalid("chat_options.tools", "this model's chat template does not list tools");
    }
    if (in.chat.tools.size() > 128) return Invalid("chat_options.tools", "at most 128 tools");
    for (const std::string& t : in.chat.tools) bytes += t.size();
  }
  if (bytes > static_cast<size_t>(max_bytes)) {
    return Invalid("messages",
                   StrCat(bytes, " bytes of content exceeds max_prompt_bytes ", max_bytes));
  }
  return absl::OkStatus();
}

bool ValidId(std::string_view id) {
  for (char c : id) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == ':' ||
          c == '-')) {
      return false;
    }
  }
  return true;
}

// sampling.*, when the request sets them (else the defaults), and the seed (from the request
// id when 0).
absl::Status ValidateSampling(const GenerateInput& in, SamplingParams* s) {
  if (in.has_sampling) {
    CHORUS_RETURN_IF_ERROR(
        CheckZeroOrRange("sampling.temperature", in.temperature, kMinTemperature, 2.0f, "greedy"));
    CHORUS_RETURN_IF_ERROR(CheckRange("sampling.top_p", in.top_p, 0.0f, 1.0f));
    CHORUS_RETURN_IF_ERROR(CheckRange<int64_t>("sampling.top_k", in.top_k, 0, 1000));
    CHORUS_RETURN_IF_ERROR(CheckRange("sampling.min_p", in.min_p, 0.0f, 1.0f));
    CHORUS_RETURN_IF_ERROR(CheckZeroOrRange("sampling.repetition_penalty", in.repetition_penalty,
                                            kMinRepetitionPenalty, 10.0f, "off"));
    CHORUS_RETURN_IF_ERROR(
        CheckRange("sampling.presence_penalty", in.presence_penalty, -2.0f, 2.0f));
    CHORUS_RETURN_IF_ERROR(
        CheckRange("sampling.frequency_penalty", in.frequency_penalty, -2.0f, 2.0f));
    s->temperature = in.temperature;
    s->top_p = in.top_p == 0 ? 1.0f : in.top_p;
    s->top_k = static_cast<int>(in.top_k);
    s->min_p = in.min_p;
    s->repetition_penalty = in.repetition_penalty == 0 ? 1.0f : in.repetition_penalty;
    s->presence_penalty = in.presence_penalty;
    s->frequency_penalty = in.frequency_penalty;
  }
  s->seed = in.seed != 0 ? in.seed : std::hash<std::string>{}(in.request_id) | 1;
  return absl::OkStatus();
}

// reasoning.*: agents (fixed or an elastic range), merge, answer regex, spread, confidence.
// Returns the largest agent count the request may run (the KV and context checks use it).
absl::StatusOr<int64_t> ValidateReasoning(const GenerateInput& in, const AdmissionLimits& L,
                                          ReasoningParams* r) {
  int64_t agents = in.agents == 0 ? 1 : in.agents;
  if (in.max_agents != 0 || in.min_agents != 0) {
    // Elastic: bounds checked here, the count chosen by the runtime at Submit.
    if (in.agents != 0) {
      return Invalid("reasoning.agents", "must be 0 with min_agents/max_agents (elastic agents)");
    }
    CHORUS_RETURN_IF_ERROR(
        CheckRange<int64_t>("reasoning.max_agents", in.max_agents, 1, L.max_agents_per_request));
    const int64_t min_agents = in.min_agents == 0 ? 1 : in.min_agents;
    CHORUS_RETURN_IF_ERROR(
        CheckRange<int64_t>("reasoning.min_agents", min_agents, 1, in.max_agents));
    r->min_agents = static_cast<int>(min_agents);
    r->max_agents = static_cast<int>(in.max_agents);
    agents = in.max_agents;  // the KV and context checks hold for the largest choice
  }
  CHORUS_RETURN_IF_ERROR(
      CheckRange<int64_t>("reasoning.agents", agents, 1, L.max_agents_per_request));
  r->agents = static_cast<int>(agents);
  if (in.merge < 0 || in.merge > 5) {
    return Invalid("reasoning.merge",
                   StrCat("unknown strategy ", in.merge,
                          " (VOTE, CONFIDENCE, BEST_LOGPROB, FIRST, SYNTHESIZE)"));
  }
  r->merge = in.merge == 0 ? MergeStrategy::kVote : static_cast<MergeStrategy>(in.merge);
  if (in.answer_regex.size() > 512) {
    return Invalid("reasoning.answer_regex", "longer than 512 bytes");
  }
  CHORUS_ASSIGN_OR_RETURN(r->answer_re, CompileAnswerRegex(in.answer_regex));
  r->answer_regex = in.answer_regex;
  CHORUS_RETURN_IF_ERROR(
      CheckRange("reasoning.temperature_spread", in.temperature_spread, 0.0f, 1.0f));
  r->temperature_spread = in.temperature_spread;
  r->return_drafts = in.return_drafts;
  if (in.confidence_threshold != 0) {
    if (!(in.confidence_threshold > 0 && in.confidence_threshold < 1)) {
      return Invalid("reasoning.confidence_threshold",
                     StrCat("must be in (0, 1), got ", in.confidence_threshold));
    }
    r->confidence_threshold = in.confidence_threshold;
  }
  CHORUS_RETURN_IF_ERROR(
      CheckRange<int64_t>("reasoning.confidence_window", in.confidence_window, 0, 2048));
  if (in.confidence_window != 0) r->confidence_window = static_cast<int>(in.confidence_window);
  return agents;
}

// max_tokens, stop strings, priority, cache_salt and latency_budget_ms.
absl::Status ValidateLimits(const GenerateInput& in, const AdmissionLimits& L, GenerateParams* p) {
  const int64_t max_tokens = in.max_tokens == 0 ? L.default_max_tokens : in.max_tokens;
  CHORUS_RETURN_IF_ERROR(CheckRange<int64_t>("max_tokens", max_tokens, 1, L.max_tokens_limit));
  p->max_tokens = static_cast<int>(max_tokens);
  if (in.stop.size() > 8) {
    return Invalid("stop", StrCat("at most 8 stop strings, got ", in.stop.size()));
  }
  for (const auto& st : in.stop) {
    if (st.empty() || st.size() > 256) {
      return Invalid("stop", "each stop string must be 1..256 bytes");
    }
  }
  p->stop = in.stop;
  CHORUS_RETURN_IF_ERROR(CheckRange<int64_t>("priority", in.priority, -100, 100));
  p->priority = static_cast<int>(in.priority);
  if (in.cache_salt.size() > 256) return Invalid("cache_salt", "longer than 256 bytes");
  p->cache_salt = BlockManager::SaltKey(in.cache_salt);
  return CheckRange<int64_t>("latency_budget_ms", in.latency_budget_ms, 0, L.max_latency_budget_ms);
}

// The prompt tokens: the chat rendered with the model's template, or the prompt text (BOS
// alone for an empty one).
absl::Status TokenizePrompt(const GenerateInput& in, const Tokenizer& tok, ChatTemplate chat,
                            int64_t max_prompt_bytes, GenerateParams* p) {
  if (!in.prompt.empty() && !in.messages.empty()) {
    return Invalid("messages", "set either prompt or messages, not both");
  }
  if (in.prompt.size() > static_cast<size_t>(max_prompt_bytes)) {
    return Invalid("prompt",
                   StrCat(in.prompt.size(), " bytes exceeds max_prompt_bytes ", max_prompt_bytes));
  }
  if (!in.messages.empty()) {
    CHORUS_RETURN_IF_ERROR(ValidateMessages(in, chat, max_prompt_bytes));
    p->prompt_tokens = RenderChat(chat, tok, in.messages, in.chat);
  } else {
    p->prompt_tokens = tok.Encode(in.prompt, /*add_special=*/true, /*parse_special=*/false);
    if (in.prompt.empty()) {
      p->strip_leading_space = tok.add_space_prefix();
      if (p->prompt_tokens.empty() && tok.bos_id() >= 0) p->prompt_tokens.push_back(tok.bos_id());
    }
  }
  if (p->prompt_tokens.empty()) return Invalid("prompt", "is empty and the model has no BOS token");
  return absl::OkStatus();
}

// The prompt and `agents` drafts of max_tokens within the context length and the KV cache.
absl::Status CheckFits(const GenerateInput& in, const AdmissionLimits& L, int context_length,
                       int64_t agents, const GenerateParams& p) {
  const int64_t plen = static_cast<int64_t>(p.prompt_tokens.size());
  if (plen + p.max_tokens > context_length) {
    return Invalid(in.messages.empty() ? "prompt" : "messages",
                   StrCat(plen, " prompt tokens + max_tokens ", p.max_tokens,
                          " exceed the model's context length ", context_length));
  }
  const int64_t bs = L.kv_block_size;
  const int64_t blocks = (plen + bs - 1) / bs + agents * ((p.max_tokens + bs - 1) / bs + 1);
  if (blocks > L.kv_num_blocks) {
    return Invalid("reasoning.agents", StrCat(agents, " agents x max_tokens ", p.max_tokens, " + ",
                                              plen, " prompt tokens need ", blocks,
                                              " KV blocks; the cache has ", L.kv_num_blocks));
  }
  return absl::OkStatus();
}

}  // namespace

AdmissionGate::Ticket& AdmissionGate::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    if (gate_ != nullptr) gate_->in_use_.fetch_sub(1);
    gate_ = std::exchange(other.gate_, nullptr);
  }
  return *this;
}

AdmissionGate::Ticket::~Ticket() {
  if (gate_ != nullptr) gate_->in_use_.fetch_sub(1);
}

AdmissionGate::Ticket AdmissionGate::TryEnter() {
  if (in_use_.fetch_add(1) >= max_) {
    in_use_.fetch_sub(1);
    return Ticket();
  }
  return Ticket(this);
}

absl::Status AdmissionGate::BusyError() const {
  return absl::ResourceExhaustedError(StrCat("admission busy: ", max_,
                                             " requests are being validated and tokenized "
                                             "(max_concurrent_admissions ",
                                             max_, ")"));
}

Admission::Admission(const AdmissionLimits& limits, const Tokenizer* tokenizer, int context_length,
                     ChatTemplate chat)
    : limits_(limits), tokenizer_(tokenizer), context_length_(context_length), chat_(chat) {}

absl::StatusOr<GenerateParams> Admission::Validate(const GenerateInput& in,
                                                   double arrival_ms) const {
  GenerateParams p;
  const AdmissionLimits& L = limits_;
  if (in.request_id.size() > 128) return Invalid("request_id", "longer than 128 bytes");
  if (!ValidId(in.request_id)) return Invalid("request_id", "may only contain [A-Za-z0-9._:-]");
  p.request_id = in.request_id;
  CHORUS_RETURN_IF_ERROR(ValidateSampling(in, &p.sampling));
  CHORUS_ASSIGN_OR_RETURN(const int64_t agents, ValidateReasoning(in, L, &p.reasoning));
  CHORUS_RETURN_IF_ERROR(ValidateLimits(in, L, &p));
  CHORUS_RETURN_IF_ERROR(TokenizePrompt(in, *tokenizer_, chat_, L.max_prompt_bytes, &p));
  CHORUS_RETURN_IF_ERROR(CheckFits(in, L, context_length_, agents, p));

  // Deadline: the earlier of the budget and the RPC deadline minus the margin.
  p.arrival_ms = arrival_ms;
  const int64_t budget =
      in.latency_budget_ms == 0 ? L.default_latency_budget_ms : in.latency_budget_ms;
  p.deadline_ms = arrival_ms + static_cast<double>(budget);
  if (in.rpc_deadline_ms >= 0) {
    p.deadline_ms =
        std::min(p.deadline_ms, in.rpc_deadline_ms - static_cast<double>(L.deadline_margin_ms));
  }
  p.stream = in.stream;
  return p;
}

}  // namespace chorus

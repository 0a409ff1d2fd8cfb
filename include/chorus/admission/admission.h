// Admission: validates every field of an incoming request (range, size, type) and turns it
// into GenerateParams: tokenized prompt (chat template applied), defaults filled in, deadline
// computed. Errors are INVALID_ARGUMENT naming the field and the limit. Thread-safe (const).
#pragma once

#include <atomic>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/core/request.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {

// A tool call in an assistant message: the function's name and its arguments as JSON text
// (rendered verbatim, as templates render a string argument).
struct ToolCall {
  std::string name;
  std::string arguments;
};

// One chat message. Roles: system, user, assistant, tool. reasoning_content (an assistant's
// thinking, when the client keeps it apart) and tool_calls are read by templates that have
// them (Qwen3); the others ignore reasoning_content and refuse tool calls.
struct ChatMessage {
  std::string role, content;
  std::optional<std::string> reasoning_content;
  std::vector<ToolCall> tool_calls;
  ChatMessage() = default;
  ChatMessage(std::string r, std::string c) : role(std::move(r)), content(std::move(c)) {}
};

// The options a chat template takes (transformers' apply_chat_template arguments).
struct ChatOptions {
  // Open the assistant's turn at the end (Llama 3's template always does).
  bool add_generation_prompt = true;
  // Qwen3: false closes an empty <think> block after the opener (no reasoning); unset or true
  // leaves thinking to the model.
  std::optional<bool> enable_thinking;
  // Tool definitions as JSON text, one per tool, rendered verbatim where the template lists
  // tools (Qwen3: in the system turn). Text as Python's json.dumps writes it matches
  // Hugging Face's renders (chorus::http::PythonStyleJson).
  std::vector<std::string> tools;
};

// A request as it arrives (unvalidated; mirrors chorus.v1.GenerateRequest).
struct GenerateInput {
  std::string request_id;
  std::string prompt;
  std::vector<ChatMessage> messages;
  ChatOptions chat;
  int64_t max_tokens = 0;
  std::vector<std::string> stop;
  bool has_sampling = false;
  float temperature = 1, top_p = 0, min_p = 0, repetition_penalty = 0;
  float presence_penalty = 0, frequency_penalty = 0;
  int64_t top_k = 0;
  uint64_t seed = 0;
  int64_t agents = 0;
  int64_t min_agents = 0, max_agents = 0;  // elastic range (max_agents > 0)
  int merge = 0;                           // chorus.v1.MergeStrategy value
  std::string answer_regex;
  float temperature_spread = 0;
  bool return_drafts = false;
  float confidence_threshold = 0;
  int64_t confidence_window = 0;
  int64_t latency_budget_ms = 0;
  int64_t priority = 0;
  std::string cache_salt;
  double rpc_deadline_ms = -1;  // absolute on the clock; < 0 when the call has none
  bool stream = false;
};

// Smallest nonzero temperature and repetition penalty: logits are divided by them, and a
// smaller divisor can overflow a float (inf, then NaN probabilities).
constexpr float kMinTemperature = 0.01f;
constexpr float kMinRepetitionPenalty = 0.01f;

struct AdmissionLimits {
  int max_agents_per_request = 16;
  int max_tokens_limit = 4096;
  int max_prompt_bytes = 1 << 20;
  int default_max_tokens = 256;
  int64_t default_latency_budget_ms = 30000;
  int64_t max_latency_budget_ms = 3600000;
  int64_t deadline_margin_ms = 20;
  int kv_block_size = 16;
  int kv_num_blocks = 4096;
  std::string chat_template;  // fallback: llama2 | llama3 | chatml | ""
};

// kChatMlThinking: Qwen3's ChatML with <think> reasoning blocks (assistant turns before the last
// user query keep only the text after their </think>; later ones show a <think> block when they
// are last or carry reasoning). kLlama3 trims every message, as its templates do.
enum class ChatTemplate { kNone, kLlama2, kLlama3, kChatMl, kChatMlThinking };
// Recognises the family of a GGUF chat template (never executes it).
ChatTemplate DetectChatTemplate(std::string_view jinja, std::string_view fallback_name);
// Token ids of the rendered conversation, ending with the assistant's turn opener unless
// options say otherwise. Message contents are tokenized as plain text: no control tokens can
// be injected through them (only user-defined tokens such as Qwen3's <think> are matched, as
// Hugging Face does).
std::vector<int32_t> RenderChat(ChatTemplate t, const Tokenizer& tok,
                                const std::vector<ChatMessage>& messages,
                                const ChatOptions& options = {});
// Whether template `t` can render messages with this role / with tool calls.
bool ChatTemplateHasRole(ChatTemplate t, std::string_view role);
bool ChatTemplateHasToolCalls(ChatTemplate t);
bool ChatTemplateListsTools(ChatTemplate t);  // ChatOptions::tools

// Bounds the admission work (validation, tokenizing, chat templates) running at once on gRPC
// threads: a slot is taken without waiting (reactors never block), or the request is refused.
// Thread-safe.
class AdmissionGate {
 public:
  // Releases its slot when destroyed; false when no slot was free.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept : gate_(std::exchange(other.gate_, nullptr)) {}
    Ticket& operator=(Ticket&& other) noexcept;
    ~Ticket();
    explicit operator bool() const { return gate_ != nullptr; }

   private:
    friend class AdmissionGate;
    explicit Ticket(AdmissionGate* gate) : gate_(gate) {}
    AdmissionGate* gate_ = nullptr;
  };

  explicit AdmissionGate(int max_concurrent) : max_(max_concurrent) {}
  Ticket TryEnter();
  // RESOURCE_EXHAUSTED naming max_concurrent_admissions (for a failed TryEnter).
  absl::Status BusyError() const;
  int in_use() const { return in_use_.load(); }

 private:
  const int max_;
  std::atomic<int> in_use_{0};
};

class Admission {
 public:
  Admission(const AdmissionLimits& limits, const Tokenizer* tokenizer, int context_length,
            ChatTemplate chat);
  // `arrival_ms` is when the call arrived (the clock's time).
  absl::StatusOr<GenerateParams> Validate(const GenerateInput& in, double arrival_ms) const;
  const AdmissionLimits& limits() const { return limits_; }

 private:
  AdmissionLimits limits_;
  const Tokenizer* tokenizer_;
  int context_length_;
  ChatTemplate chat_;
};

}  // namespace chorus

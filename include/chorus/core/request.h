// Core request types shared by every stage (admission -> scheduler -> engine -> agents ->
// sinks): what a request asks for (GenerateParams), what it gets (GenerateResult) and where
// results go (ResultSink). Plain structs: no gRPC, no backend. The engine-side state of a
// request in flight is in sequence/sequence.h.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/core/sampling_params.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace chorus {

enum class MergeStrategy {
  kVote = 1,
  kConfidence = 2,
  kBestLogprob = 3,
  kFirst = 4,
  kSynthesize = 5
};

enum class FinishReason {
  kNone = 0,
  kLength = 1,
  kStop = 2,
  kEndOfText = 3,
  kBudget = 4,
  kCancelled = 5,
  kLowConfidence = 6,
  kConsensus = 7,
  kContext = 8,
};

struct ReasoningParams {
  int agents = 1;
  // Elastic: with max_agents > 0 the runtime sets `agents` in [min_agents, max_agents] at
  // Submit (agents/elastic.h); until then `agents` is max_agents (the admission bounds).
  int min_agents = 0, max_agents = 0;
  MergeStrategy merge = MergeStrategy::kVote;
  std::string answer_regex;  // RE2; empty = default rule
  // answer_regex compiled once, at admission (null: the default rule). Shared, immutable.
  std::shared_ptr<const re2::RE2> answer_re;
  float temperature_spread = 0;  // agent temperatures spread around the base
  bool return_drafts = false;
  float confidence_threshold = 0.05f;  // CONFIDENCE: window probability floor
  int confidence_window = 16;          // CONFIDENCE: tokens per window
};

// A validated request, ready for the engine.
struct GenerateParams {
  std::string request_id;
  // Identity that submitted (the bearer token's name when auth is on, else ""): request ids
  // are unique per owner, and only the owner can abort its requests.
  std::string owner;
  // The owner's tenant limit on agents queued or running at once (0 = none).
  int owner_max_inflight_agents = 0;
  std::vector<int32_t> prompt_tokens;  // never empty (BOS at least)
  bool strip_leading_space = false;    // the prompt is BOS alone: drop the dummy-prefix space
  int max_tokens = 256;
  std::vector<std::string> stop;
  SamplingParams sampling;
  ReasoningParams reasoning;
  int priority = 0;
  // BlockManager::SaltKey of the request's cache_salt (0 = none): prefix-cache entries are
  // shared only between requests with the same salt.
  uint64_t cache_salt = 0;
  double arrival_ms = 0;
  double deadline_ms = 0;  // absolute, on the runtime's clock
  bool stream = false;
};

// One finished (or cut) draft as the merge and the client see it.
struct DraftResult {
  int agent = 0;
  std::string text;
  int num_tokens = 0;
  double sum_logprob = 0;
  double mean_logprob() const { return num_tokens > 0 ? sum_logprob / num_tokens : -1e9; }
  std::vector<float> logprobs;  // per token
  FinishReason finish = FinishReason::kNone;
  double finish_ms = 0;   // when it finished (runtime clock)
  std::string answer;     // filled by the vote
  double confidence = 0;  // filled by CONFIDENCE
};

struct MergeInfo {
  MergeStrategy strategy = MergeStrategy::kVote;
  int winner = -1;
  std::map<std::string, double> votes;
};

struct GenerateResult {
  std::string request_id;
  int agents = 0;  // drafts run (the elastic choice included)
  std::string text;
  FinishReason finish = FinishReason::kNone;
  MergeInfo merge;
  std::vector<DraftResult> drafts;  // every draft (the server returns them when asked)
  int prompt_tokens = 0, computed_prompt_tokens = 0, cached_prompt_tokens = 0;
  int completion_tokens = 0;
  double queue_ms = 0, ttft_ms = 0, total_ms = 0, budget_ms = 0;
  bool budget_cut = false;
};

// Where results go. Implementations are thread-safe; the engine thread calls OnDelta and
// OnAgentFinished any number of times, then OnComplete exactly once, and nothing after it.
class ResultSink {
 public:
  virtual ~ResultSink() = default;
  virtual void OnDelta(int agent, std::string_view text) = 0;
  virtual void OnAgentFinished(const DraftResult& draft) = 0;
  virtual void OnComplete(absl::StatusOr<GenerateResult> result) = 0;
  // True once the caller went away (checked by the engine thread every step).
  virtual bool Cancelled() const { return false; }
};

}  // namespace chorus

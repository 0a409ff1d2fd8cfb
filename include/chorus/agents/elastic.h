// Elastic agents (issue 14): how many drafts a request with a range [min_agents, max_agents]
// gets, chosen once when it is submitted, from its latency budget and the server's live load.
// Pure: the load and the step-time model come in as arguments (unit tests pass fakes).
#pragma once

#include <functional>

namespace chorus {

struct ElasticRequest {
  int min_agents = 1, max_agents = 1;
  double budget_ms = 0;   // deadline - now
  double prefill_ms = 0;  // predicted prefill of the prompt
  // Decode steps a draft is expected to take (the runtime passes
  // LatencyModel::ExpectedDraftTokens, at most the request's max_tokens).
  int max_tokens = 1;
  double merge_reserve_ms = 0;  // kept back to merge and reply
  int blocks_per_agent = 1;     // KV blocks one draft may need (max_tokens / block size + 1)
};

struct ElasticLoad {
  int running_agents = 0;      // decoding now: rows every step carries
  int queued_agents = 0;       // admitted, waiting: they will join the same steps
  int max_running_agents = 1;  // the scheduler's cap on rows
  int free_kv_blocks = 0;      // free or evictable
};

// The largest n in [min, max] such that the request's drafts fit: rows (running + queued + n)
// within max_running_agents, n x blocks_per_agent within the free blocks, and prefill +
// max_tokens steps of step_ms(rows) + the merge reserve within the budget. When not even
// `min_agents` fits, `min_agents` (the budget then cuts drafting, as for a fixed count).
int ChooseAgents(const ElasticRequest& req, const ElasticLoad& load,
                 const std::function<double(int rows)>& step_ms);

}  // namespace chorus

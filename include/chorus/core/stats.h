// Counters and gauges the runtime publishes (Runtime::Stats) and the metrics module exports.
#pragma once

#include <cstdint>

namespace chorus {

struct RuntimeStats {
  int running_requests = 0, waiting_requests = 0, running_agents = 0, waiting_agents = 0;
  int kv_blocks_total = 0, kv_blocks_used = 0, prefix_cache_blocks = 0;
  int64_t steps_run = 0, requests_completed = 0, requests_cancelled = 0, requests_failed = 0;
  int64_t preemptions = 0, tokens_generated = 0;
  int64_t prompt_tokens_computed = 0, prompt_tokens_cached = 0;
};

}  // namespace chorus

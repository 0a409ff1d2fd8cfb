#include "chorus/agents/elastic.h"

#include <algorithm>

namespace chorus {

int ChooseAgents(const ElasticRequest& req, const ElasticLoad& load,
                 const std::function<double(int rows)>& step_ms) {
  const int lo = std::max(1, req.min_agents);
  const int hi = std::max(lo, req.max_agents);
  const int others = std::max(0, load.running_agents) + std::max(0, load.queued_agents);
  for (int n = hi; n > lo; --n) {
    const int rows = others + n;
    if (rows > load.max_running_agents) continue;
    if (static_cast<long long>(n) * req.blocks_per_agent > load.free_kv_blocks) continue;
    const double need = req.prefill_ms + req.max_tokens * step_ms(rows) + req.merge_reserve_ms;
    if (need <= req.budget_ms) return n;
  }
  return lo;
}

}  // namespace chorus

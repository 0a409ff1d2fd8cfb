// Elastic agents as a pure function of (budget, load, step-time model) (issue 14).
#include "chorus/agents/elastic.h"

#include <gtest/gtest.h>

namespace chorus {
namespace {

// A compute-bound step: 2 ms plus 0.5 ms per row.
double Linear(int rows) { return 2.0 + 0.5 * rows; }

ElasticRequest Req(double budget_ms) {
  ElasticRequest r;
  r.min_agents = 1;
  r.max_agents = 16;
  r.budget_ms = budget_ms;
  r.prefill_ms = 10;
  r.max_tokens = 100;
  r.merge_reserve_ms = 5;
  r.blocks_per_agent = 8;
  return r;
}

ElasticLoad Idle() {
  ElasticLoad l;
  l.max_running_agents = 256;
  l.free_kv_blocks = 4096;
  return l;
}

TEST(ElasticAgents, IdleServerGivesAsManyAsTheBudgetAllows) {
  // 16 agents: 10 + 100 x (2 + 8) + 5 = 1015 ms.
  EXPECT_EQ(ChooseAgents(Req(1015), Idle(), Linear), 16);
  // 1014 ms: 15 agents take 10 + 100 x 9.5 + 5 = 965.
  EXPECT_EQ(ChooseAgents(Req(1014), Idle(), Linear), 15);
  // A budget that fits one agent only: 10 + 100 x 2.5 + 5 = 265.
  EXPECT_EQ(ChooseAgents(Req(300), Idle(), Linear), 1);
}

TEST(ElasticAgents, FewerAsLoadRises) {
  const ElasticRequest r = Req(3000);
  int previous = 1 << 30;
  for (int running : {0, 8, 16, 24, 32, 40, 48, 56}) {
    ElasticLoad l = Idle();
    l.running_agents = running;
    const int n = ChooseAgents(r, l, Linear);
    EXPECT_LE(n, previous) << running << " running";
    EXPECT_GE(n, 1);
    // What it chose fits; one more would not (unless it is the maximum).
    const double need = r.prefill_ms + r.max_tokens * Linear(running + n) + r.merge_reserve_ms;
    if (n > 1) EXPECT_LE(need, r.budget_ms) << running;
    if (n < 16) {
      EXPECT_GT(r.prefill_ms + r.max_tokens * Linear(running + n + 1) + r.merge_reserve_ms,
                r.budget_ms)
          << running;
    }
    previous = n;
  }
  ElasticLoad busy = Idle();
  busy.running_agents = 40;
  EXPECT_LT(ChooseAgents(r, busy, Linear), 16);
}

TEST(ElasticAgents, QueuedAgentsCountAsLoad) {
  ElasticLoad running = Idle(), queued = Idle();
  running.running_agents = 30;
  queued.queued_agents = 30;
  EXPECT_EQ(ChooseAgents(Req(3000), running, Linear), ChooseAgents(Req(3000), queued, Linear));
}

TEST(ElasticAgents, NeverBelowTheMinimum) {
  ElasticRequest r = Req(50);  // nothing fits
  r.min_agents = 3;
  EXPECT_EQ(ChooseAgents(r, Idle(), Linear), 3);
  ElasticLoad full = Idle();
  full.free_kv_blocks = 0;
  EXPECT_EQ(ChooseAgents(r, full, Linear), 3);
}

TEST(ElasticAgents, SlotsAndKvBlocksBound) {
  ElasticLoad l = Idle();
  l.max_running_agents = 20;
  l.running_agents = 15;
  EXPECT_EQ(ChooseAgents(Req(1e9), l, Linear), 5);  // 5 slots left
  l = Idle();
  l.free_kv_blocks = 8 * 6 + 7;  // room for 6 drafts of 8 blocks
  EXPECT_EQ(ChooseAgents(Req(1e9), l, Linear), 6);
}

TEST(ElasticAgents, FlatStepTimeGivesTheMaximumWhenItFits) {
  // Memory-bound decode: the step costs the same for 1 or 16 rows.
  EXPECT_EQ(ChooseAgents(Req(1000), Idle(), [](int) { return 9.0; }), 16);
}

}  // namespace
}  // namespace chorus

// The scheduler as the one owner of KV blocks (issue 9), driven with hand-built groups and a
// fake clock, without a model: what agents decide (fork, finish) reaches the BlockManager only
// through Schedule(); the fork's copy-on-write travels in the plan for the engine to run.
#include <gtest/gtest.h>

#include <memory>

#include "chorus/core/clock.h"
#include "chorus/scheduler/scheduler.h"

namespace chorus {
namespace {

constexpr int kBlockSize = 4;

class BlockOwnershipTest : public ::testing::Test {
 protected:
  BlockOwnershipTest() : blocks_(32, kBlockSize, /*prefix_cache=*/true), scheduler_({}, &blocks_) {}

  // A group of `agents` agents whose prompt is `prompt_len` tokens (distinct per `seed`).
  RequestGroup* Add(int prompt_len, int agents, int seed = 1) {
    GenerateParams p;
    p.request_id = "r";
    p.request_id += std::to_string(groups_.size());
    for (int i = 0; i < prompt_len; ++i) p.prompt_tokens.push_back(seed * 100 + i);
    p.reasoning.agents = agents;
    p.max_tokens = 8;
    p.arrival_ms = clock_.NowMs();
    p.deadline_ms = clock_.NowMs() + 1000;
    groups_.push_back(std::make_unique<RequestGroup>(std::move(p), nullptr));
    groups_.back()->admit_seq = groups_.size();
    scheduler_.AddWaiting(groups_.back().get());
    return groups_.back().get();
  }
  // What the runtime does after a step that ran `plan`: rows computed, a token sampled for each
  // live agent's last row, and at the last prompt row the fork as agents/agent_group.cc makes it
  // (agents created, one token each).
  void Apply(const StepPlan& plan) {
    for (const auto& s : plan.segments) {
      RequestGroup& g = *s.group;
      if (s.agent >= 0) {
        AgentSequence& a = g.agents[s.agent];
        a.computed += s.len;
        if (s.logits && !a.finished()) a.tokens.push_back(7);  // its next sampled token
        continue;
      }
      g.prompt_computed += s.len;
      if (!s.logits) continue;
      const int plen = static_cast<int>(g.params.prompt_tokens.size());
      if (!g.forked) {
        g.agents.resize(g.params.reasoning.agents);
        for (int i = 0; i < g.params.reasoning.agents; ++i) {
          g.agents[i].index = i;
          g.agents[i].tokens = g.params.prompt_tokens;
        }
        g.forked = true;
      }
      for (auto& a : g.agents) {
        a.computed = plen;
        a.tokens.push_back(7);  // the first sampled token
      }
      g.fork_pending = true;
      g.state = GroupState::kDecode;
    }
    clock_.AdvanceMs(5);
  }
  int TotalRefs() const {
    int n = 0;
    for (int b = 0; b < blocks_.num_blocks(); ++b) n += blocks_.refcount(b);
    return n;
  }

  FakeClock clock_;
  BlockManager blocks_;
  Scheduler scheduler_;
  std::vector<std::unique_ptr<RequestGroup>> groups_;
};

TEST_F(BlockOwnershipTest, ForkSharesFullBlocksAndPlansCopiesOfThePartialOne) {
  RequestGroup* g = Add(/*prompt_len=*/10, /*agents=*/3);  // 2 full blocks + 2 tokens
  StepPlan plan = scheduler_.Schedule();
  ASSERT_EQ(plan.segments.size(), 1u);
  EXPECT_TRUE(plan.block_copies.empty());
  ASSERT_EQ(g->prompt_table.size(), 3u);
  ASSERT_EQ(g->fork_blocks.size(), 2u);  // one copy per agent past the first
  const std::vector<int32_t> prompt = g->prompt_table;
  const std::vector<int32_t> reserve = g->fork_blocks;
  Apply(plan);
  // The agents forked, but nothing moved yet: the blocks are the scheduler's to hand out.
  EXPECT_TRUE(g->agents[0].block_table.empty());
  EXPECT_EQ(g->prompt_table, prompt);

  plan = scheduler_.Schedule();
  ASSERT_EQ(plan.block_copies.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(plan.block_copies[i].first, prompt[2]);  // the partial last prompt block
    EXPECT_EQ(plan.block_copies[i].second, reserve[i]);
  }
  EXPECT_TRUE(g->prompt_table.empty());
  EXPECT_TRUE(g->fork_blocks.empty());
  for (int a = 0; a < 3; ++a) {
    const auto& t = g->agents[a].block_table;
    ASSERT_EQ(t.size(), 3u) << a;
    EXPECT_EQ(t[0], prompt[0]);
    EXPECT_EQ(t[1], prompt[1]);
    EXPECT_EQ(t[2], a == 0 ? prompt[2] : reserve[a - 1]);
  }
  EXPECT_EQ(blocks_.refcount(prompt[0]), 3);
  EXPECT_EQ(blocks_.refcount(prompt[1]), 3);
  EXPECT_EQ(blocks_.refcount(prompt[2]), 1);
  EXPECT_EQ(blocks_.refcount(reserve[0]), 1);
  // One decode row per agent, after the copies.
  ASSERT_EQ(plan.segments.size(), 3u);
  for (const auto& s : plan.segments) EXPECT_EQ(s.len, 1);
}

TEST_F(BlockOwnershipTest, AFinishedAgentsBlocksAreFreedAtTheNextSchedule) {
  RequestGroup* g = Add(10, 3);
  Apply(scheduler_.Schedule());
  StepPlan plan = scheduler_.Schedule();  // the fork
  const int used = blocks_.num_used();
  const int32_t own = g->agents[2].block_table.back();  // agent 2's private copy
  g->agents[2].draft.finish = FinishReason::kStop;      // what FinishAgent decides
  EXPECT_EQ(blocks_.num_used(), used);                  // the agent changed no block itself
  Apply(plan);
  plan = scheduler_.Schedule();
  EXPECT_TRUE(g->agents[2].block_table.empty());
  EXPECT_EQ(blocks_.refcount(own), 0);
  EXPECT_EQ(blocks_.refcount(g->agents[0].block_table[0]), 2);  // shared by the two left
  EXPECT_EQ(plan.segments.size(), 2u);
}

TEST_F(BlockOwnershipTest, RemoveReturnsEveryBlockAndPublishesThePromptForReuse) {
  RequestGroup* g = Add(10, 2);
  Apply(scheduler_.Schedule());
  Apply(scheduler_.Schedule());  // forked and one decode row
  scheduler_.Remove(g);
  EXPECT_EQ(TotalRefs(), 0);
  EXPECT_EQ(blocks_.num_used(), 0);
  // Its two full prompt blocks stay cached: the same prompt again hits them.
  RequestGroup* again = Add(10, 1);
  scheduler_.Schedule();
  EXPECT_EQ(again->cached_prompt_tokens, 2 * kBlockSize);
}

TEST_F(BlockOwnershipTest, APreemptedForkDropsItsPlannedCopies) {
  // 32 blocks: a 6-agent group (3 prompt blocks + 5 copies + 6 growth) fills most of them.
  RequestGroup* big = Add(10, 6, /*seed=*/1);
  Apply(scheduler_.Schedule());
  StepPlan plan = scheduler_.Schedule();
  EXPECT_EQ(plan.block_copies.size(), 5u);
  scheduler_.Remove(big);
  EXPECT_EQ(TotalRefs(), 0);
}

// Preemption inside Schedule() (GrowAgentTables) of a group forked in the same call: its planned
// copies go with it, so the engine never writes into blocks the group no longer holds.
TEST_F(BlockOwnershipTest, AGroupPreemptedRightAfterItsForkLeavesNoCopyInThePlan) {
  RequestGroup* low = Add(10, 3, /*seed=*/1);  // 3 prompt blocks + 2 fork copies
  RequestGroup* high = Add(8, 1, /*seed=*/2);  // 2 full prompt blocks, nothing to copy
  high->params.priority = 5;
  Apply(scheduler_.Schedule());  // both prefilled and forked (fork_pending)
  ASSERT_TRUE(low->fork_pending);
  ASSERT_TRUE(high->fork_pending);
  // The high-priority agent needs 30 blocks: only preempting `low` frees enough.
  auto& tokens = high->agents[0].tokens;
  while (tokens.size() < 120) tokens.push_back(7);
  const StepPlan plan = scheduler_.Schedule();
  EXPECT_TRUE(plan.block_copies.empty());
  EXPECT_EQ(scheduler_.preemptions(), 1);
  EXPECT_EQ(low->state, GroupState::kWaiting);
  for (const auto& a : low->agents) EXPECT_TRUE(a.block_table.empty());
  EXPECT_EQ(high->agents[0].block_table.size(), 30u);
  EXPECT_EQ(TotalRefs(), 30);
}

TEST_F(BlockOwnershipTest, ReleaseFinishedFreesAForkNobodyTookUp) {
  RequestGroup* g = Add(10, 2);
  Apply(scheduler_.Schedule());  // forked; both agents end on their first token
  for (auto& a : g->agents) a.draft.finish = FinishReason::kLength;
  scheduler_.ReleaseFinished(g);
  EXPECT_FALSE(g->fork_pending);
  EXPECT_TRUE(g->prompt_table.empty());
  EXPECT_EQ(TotalRefs(), 0);
}

TEST_F(BlockOwnershipTest, LentBlocksComeBack) {
  const std::vector<int32_t> lent = scheduler_.LendBlocks(5);
  EXPECT_EQ(lent.size(), 5u);
  EXPECT_EQ(blocks_.num_used(), 5);
  scheduler_.ReturnBlocks(lent);
  EXPECT_EQ(blocks_.num_used(), 0);
  EXPECT_EQ(scheduler_.LendBlocks(100).size(), 32u);  // no more than there are
}

}  // namespace
}  // namespace chorus

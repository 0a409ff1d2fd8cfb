// The runtime's per-iteration decision for a request (runtime/group_policy.h) and its latency
// model (runtime/latency_model.h), on hand-built groups and numbers with a fake clock: no model,
// no engine thread.
#include "chorus/runtime/group_policy.h"

#include <gtest/gtest.h>

#include <memory>
#include <thread>
#include <vector>

#include "../collect_sink.h"
#include "chorus/core/clock.h"
#include "chorus/runtime/latency_model.h"

namespace chorus {
namespace {

class GroupPolicyTest : public ::testing::Test {
 protected:
  // A request that arrived at 1000 ms with a 200 ms budget and a 32-token prompt.
  std::unique_ptr<RequestGroup> Group() {
    GenerateParams p;
    p.request_id = "r";
    p.prompt_tokens.assign(32, 5);
    p.arrival_ms = clock_.NowMs();
    p.deadline_ms = clock_.NowMs() + 200;
    auto g = std::make_unique<RequestGroup>(std::move(p), sink_);
    g->state = GroupState::kWaiting;
    return g;
  }
  GroupTiming Timing() const {
    GroupTiming t;
    t.next_step_ms = 10;
    t.prefill_left_ms = 50;
    t.one_row_step_ms = 8;
    t.merge_reserve_ms = 5;
    return t;
  }

  FakeClock clock_;
  std::shared_ptr<testing::CollectSink> sink_ = std::make_shared<testing::CollectSink>();
};

TEST_F(GroupPolicyTest, AWaitingRequestRunsWhileItsPrefillStillFits) {
  auto g = Group();
  // 1000 + 50 + 8 + 5 <= 1200 until now = 1137.
  EXPECT_EQ(DecideGroup(*g, 1137, Timing()), GroupAction::kContinue);
  EXPECT_EQ(DecideGroup(*g, 1138, Timing()), GroupAction::kExpire);
}

TEST_F(GroupPolicyTest, APreemptedGroupWithDraftsIsCutNotFailed) {
  auto g = Group();
  g->forked = true;  // drafted, then preempted back to waiting
  EXPECT_EQ(DecideGroup(*g, 1138, Timing()), GroupAction::kCutBudget);
}

TEST_F(GroupPolicyTest, DecodingStopsWhenTheNextStepAndTheMergeWouldEndPastTheDeadline) {
  auto g = Group();
  g->state = GroupState::kDecode;
  // now + 10 + 5 > 1200 from now = 1185.1 on.
  EXPECT_EQ(DecideGroup(*g, 1185, Timing()), GroupAction::kContinue);
  EXPECT_EQ(DecideGroup(*g, 1185.5, Timing()), GroupAction::kCutBudget);
}

TEST_F(GroupPolicyTest, ARequestNeverStartedWithinTheQueueDelayIsShed) {
  auto g = Group();
  GroupTiming t = Timing();
  t.max_queue_delay_ms = 20;
  EXPECT_EQ(DecideGroup(*g, 1020, t), GroupAction::kContinue);
  EXPECT_EQ(DecideGroup(*g, 1021, t), GroupAction::kShed);
  g->first_scheduled_ms = 1005;  // started (then preempted): never shed
  EXPECT_EQ(DecideGroup(*g, 1021, t), GroupAction::kContinue);
}

TEST_F(GroupPolicyTest, CancellationWinsOverEverything) {
  auto g = Group();
  g->state = GroupState::kDecode;
  g->cancelled = true;
  EXPECT_EQ(DecideGroup(*g, 1190, Timing()), GroupAction::kCancel);
}

TEST_F(GroupPolicyTest, SynthesisNeedsBothTheBlocksAndTheTime) {
  // 1000 + 20 + 100 + 5 <= 1200: fits on time; 10 blocks needed.
  EXPECT_TRUE(SynthesisFits(1000, 1200, 20, 100, 5, 10, 10));
  EXPECT_FALSE(SynthesisFits(1000, 1200, 20, 100, 5, 11, 10));
  EXPECT_FALSE(SynthesisFits(1076, 1200, 20, 100, 5, 10, 10));
}

TEST(LatencyModelTest, CalibrationThenMeasuredPrefillSteps) {
  LatencyModel m;
  m.Calibrate(32, 64, 3, 9);  // 2 ms per prompt token
  EXPECT_DOUBLE_EQ(m.PrefillMs(10), 20);
  m.ObserveStep(40, 40, 40);  // 1 ms per row, mostly prompt: EMA with weight 0.3
  EXPECT_DOUBLE_EQ(m.PrefillMs(10), 10 * (2 + 0.3 * (1 - 2)));
  m.ObserveStep(8, 0, 100);  // decode rows leave the prefill estimate alone
  EXPECT_DOUBLE_EQ(m.PrefillMs(10), 10 * (2 + 0.3 * (1 - 2)));
  EXPECT_GT(m.StepMs(1), 0);
  m.ObserveIterationOverhead(10);
  EXPECT_DOUBLE_EQ(m.IterationOverheadMs(), 1.0);
}

TEST(LatencyModelTest, ExpectedDraftTokensFollowsFinishedDraftsUpToMaxTokens) {
  LatencyModel m;
  EXPECT_EQ(m.ExpectedDraftTokens(64), 64);  // nothing seen: the worst case
  for (int i = 0; i < LatencyModel::kMinDraftSamples - 1; ++i) m.ObserveDraftTokens(40);
  EXPECT_EQ(m.ExpectedDraftTokens(64), 64);  // too few drafts to trust
  m.ObserveDraftTokens(40);
  EXPECT_EQ(m.ExpectedDraftTokens(64), 40);
  EXPECT_EQ(m.ExpectedDraftTokens(30), 30);  // never above the request's max_tokens
  m.ObserveDraftTokens(50);                  // EMA 40 + 0.05 * 10 = 40.5, deviation 0.05 * 10 = 0.5
  EXPECT_EQ(m.ExpectedDraftTokens(64), 42);  // ceil(40.5 + 2 * 0.5)
  // Stopped drafts are lower bounds: shorter ones say nothing, longer ones raise the estimate.
  for (int i = 0; i < 50; ++i) m.ObserveDraftTokens(5, /*at_least=*/true);
  EXPECT_EQ(m.ExpectedDraftTokens(64), 42);
  m.ObserveDraftTokens(60, /*at_least=*/true);
  EXPECT_GT(m.ExpectedDraftTokens(64), 42);
  for (int i = 0; i < 200; ++i) m.ObserveDraftTokens(i % 2 == 0 ? 30 : 50);
  // Mean about 40, mean absolute deviation about 10: a high estimate near 60.
  EXPECT_GE(m.ExpectedDraftTokens(100), 55);
  EXPECT_LE(m.ExpectedDraftTokens(100), 64);
  m.ObserveDraftTokens(0);  // a draft without tokens says nothing
  EXPECT_EQ(m.ExpectedDraftTokens(1), 1);
}

// The engine thread observes while request threads predict (TSan runs this in make test-tsan).
TEST(LatencyModelTest, ObserveAndPredictFromSeveralThreads) {
  LatencyModel m;
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&m] {
      for (int i = 0; i < 2000; ++i) {
        EXPECT_GE(m.StepMs(1 + i % 16), 0);
        EXPECT_GE(m.PrefillMs(i % 64), 0);
        EXPECT_GE(m.IterationOverheadMs(), 0);
        EXPECT_GE(m.ExpectedDraftTokens(64), 1);
      }
    });
  }
  for (int i = 0; i < 2000; ++i) {
    m.ObserveStep(1 + i % 16, i % 32, 1.0 + i % 7);
    m.ObserveIterationOverhead(0.5);
    m.ObserveDraftTokens(1 + i % 50);
  }
  for (auto& r : readers) r.join();
}

}  // namespace
}  // namespace chorus

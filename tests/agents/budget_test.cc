// Budget logic with a fake clock: cut in time, merge reserve kept, infeasible budget rejected.
#include "chorus/agents/budget.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "chorus/core/clock.h"

namespace chorus {
namespace {

TEST(BudgetTest, PredictorLearnsStepTimesPerBatchShape) {
  StepTimePredictor p(2.0, 0.5);
  EXPECT_DOUBLE_EQ(p.PredictMs(8), 2.0 + 4.0);  // before any measurement
  for (int i = 0; i < 20; ++i) p.Observe(8, 10.0);
  EXPECT_NEAR(p.PredictMs(8), 10.0, 1e-9);
  EXPECT_NEAR(p.PredictMs(16), 20.0, 1e-9);  // scaled up from the nearest smaller shape
  EXPECT_NEAR(p.PredictMs(2), 10.0, 1e-9);   // never scaled down below a measurement
  for (int i = 0; i < 50; ++i) p.Observe(1, 3.0);
  EXPECT_NEAR(p.PredictMs(1), 3.0, 1e-6);
  // Between two measured shapes: interpolated (3 ms at 1 row, 10 ms at 8 rows), not 3 ms per
  // row scaled up from the smaller one.
  EXPECT_NEAR(p.PredictMs(2), 4.0, 1e-6);
  EXPECT_NEAR(p.PredictMs(4), 6.0, 1e-6);
  EXPECT_NEAR(p.PredictMs(16), 20.0, 1e-6);  // above both: scaled from the larger
}

TEST(BudgetTest, ARunOfStepsCountsTheDeviationOncePerRunNotPerStep) {
  StepTimePredictor p;
  for (int i = 0; i < 400; ++i) p.Observe(4, i % 2 ? 1.2 : 0.8);  // mean about 1, spread 0.2
  const double one = p.PredictMs(4), run4 = p.PredictMs(4, 4), run64 = p.PredictMs(4, 64);
  EXPECT_GT(one, 1.3);  // one step: mean (about 1) + 2 deviations (about 0.2 each)
  EXPECT_GT(run64, 0.95);
  // Per step, mean + 2 dev / sqrt(steps): one - run64 = 2 dev (1 - 1/8) and one - run4 =
  // 2 dev (1 - 1/2), whatever the mean and the deviation are.
  EXPECT_NEAR((one - run64) / (one - run4), 1.75, 1e-9);
}

TEST(BudgetTest, DraftingStopsWhenTheNextStepWouldEatTheMergeReserve) {
  FakeClock clock(1000);
  const double deadline = 1100, step = 10, reserve = 5;
  int steps = 0;
  while (!ShouldStopDrafting(clock.NowMs(), deadline, step, reserve)) {
    clock.AdvanceMs(step);  // one step runs
    ++steps;
  }
  // 8 steps end at 1080; a 9th would end at 1090 + 5 reserve <= 1100: allowed.
  EXPECT_EQ(steps, 8 + 1);
  EXPECT_LE(clock.NowMs() + reserve, deadline);  // the merge reserve is intact
  EXPECT_GT(clock.NowMs() + step + reserve, deadline);
}

TEST(BudgetTest, AnInfeasibleBudgetIsRejectedBeforeItStarts) {
  FakeClock clock(0);
  // Prefill 100 ms + a 10 ms step + 5 ms reserve against budgets of 100 and 200 ms.
  EXPECT_FALSE(PrefillFits(clock.NowMs(), 100, 100, 10, 5));
  EXPECT_TRUE(PrefillFits(clock.NowMs(), 200, 100, 10, 5));
  clock.AdvanceMs(90);
  EXPECT_FALSE(PrefillFits(clock.NowMs(), 200, 100, 10, 5));
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

TEST(BudgetTest, NoisyStepsArePredictedAboveTheirMean) {
  StepTimePredictor p;
  for (int i = 0; i < 100; ++i) p.Observe(8, i % 2 ? 12.0 : 8.0);  // mean 10, spread 2
  EXPECT_GT(p.PredictMs(8), 11.0);
  EXPECT_LT(p.PredictMs(8), 16.0);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

// Issue 11, finding 8: the engine thread observes steps while gRPC threads predict (Submit).
// Unguarded, the bucket map is written while it is read (ThreadSanitizer reports it, and a
// read during a rebalance can return garbage). Every prediction must stay a sane number.
TEST(BudgetTest, ObserveAndPredictFromManyThreadsAreSafe) {
  StepTimePredictor p(2.0, 0.5);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t) {
    readers.emplace_back([&] {
      while (!stop.load()) {
        for (int rows = 1; rows <= (1 << 20); rows *= 2) {
          const double ms = p.PredictMs(rows);
          if (!(ms > 0 && ms < 1e12)) bad.fetch_add(1);
        }
      }
    });
  }
  for (int i = 0; i < 20000; ++i) p.Observe(1 << (i % 21), 1.0 + i % 7);
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(p.PredictMs(1), 0);
}

}  // namespace
}  // namespace chorus

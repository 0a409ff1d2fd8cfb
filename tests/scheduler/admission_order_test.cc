// Admission order on the Scheduler alone (no engine): priority order, no head-of-line
// blocking by a group that does not fit, and aging so that group is not starved
// (issue 11, finding 2).
#include <gtest/gtest.h>

#include <memory>

#include "chorus/scheduler/scheduler.h"

namespace chorus {
namespace {

class AdmissionOrderTest : public ::testing::Test {
 protected:
  // 16 blocks of 4 tokens, no prefix cache.
  AdmissionOrderTest() : blocks_(16, 4, false), scheduler_(Limits(), &blocks_) {}
  static SchedulerLimits Limits() {
    SchedulerLimits l;
    l.max_admission_bypass = 2;
    return l;
  }
  // A one-agent group whose prompt fills `prompt_blocks` blocks; admission takes one more
  // (the agent's first growth block).
  RequestGroup* Add(const std::string& id, int prompt_blocks, int priority) {
    GenerateParams p;
    p.request_id = id;
    p.prompt_tokens.assign(static_cast<size_t>(prompt_blocks) * 4, 7);
    p.priority = priority;
    p.deadline_ms = 1e9;
    groups_.push_back(std::make_unique<RequestGroup>(std::move(p), nullptr));
    groups_.back()->admit_seq = groups_.size();
    scheduler_.AddWaiting(groups_.back().get());
    return groups_.back().get();
  }
  bool Admitted(const RequestGroup* g) const {
    for (const RequestGroup* r : scheduler_.running()) {
      if (r == g) return true;
    }
    return false;
  }

  BlockManager blocks_;
  Scheduler scheduler_;
  std::vector<std::unique_ptr<RequestGroup>> groups_;
};

TEST_F(AdmissionOrderTest, HigherPriorityFirstWhenEverythingFits) {
  RequestGroup* low = Add("low", 1, -1);
  RequestGroup* high = Add("high", 1, 5);
  scheduler_.Schedule();
  ASSERT_EQ(scheduler_.admitted().size(), 2u);
  EXPECT_EQ(scheduler_.admitted()[0], high);
  EXPECT_EQ(scheduler_.admitted()[1], low);
}

// The head-of-line `break` used to stop every group behind one that did not fit.
TEST_F(AdmissionOrderTest, ASmallGroupStartsPastALargeOneThatDoesNotFit) {
  RequestGroup* running = Add("running", 8, 0);  // 9 of 16 blocks
  scheduler_.Schedule();
  ASSERT_TRUE(Admitted(running));
  RequestGroup* large = Add("large", 8, 5);  // needs 9, 7 free
  RequestGroup* small = Add("small", 2, 0);  // needs 3
  scheduler_.Schedule();
  EXPECT_FALSE(Admitted(large));
  EXPECT_TRUE(Admitted(small));
  EXPECT_EQ(large->bypassed, 1);
}

TEST_F(AdmissionOrderTest, AGroupPassedTooOftenIsNotPassedAgain) {
  RequestGroup* running = Add("running", 8, 0);
  scheduler_.Schedule();
  RequestGroup* large = Add("large", 8, 5);
  std::vector<RequestGroup*> small;
  for (int i = 0; i < 2; ++i) {  // max_admission_bypass = 2 groups may pass it
    small.push_back(Add("small" + std::to_string(i), 1, 0));
    scheduler_.Schedule();
    EXPECT_TRUE(Admitted(small.back())) << i;
  }
  EXPECT_EQ(large->bypassed, 2);
  RequestGroup* blocked = Add("blocked", 1, 0);  // it fits, but waits behind the aged group
  scheduler_.Schedule();
  EXPECT_FALSE(Admitted(blocked));
  // As blocks come back, the aged group starts first.
  scheduler_.Remove(running);
  for (RequestGroup* g : small) scheduler_.Remove(g);
  scheduler_.Schedule();
  EXPECT_TRUE(Admitted(large));
  EXPECT_TRUE(Admitted(blocked));  // and the rest follow as they fit
  EXPECT_EQ(scheduler_.admitted()[0], large);
}

}  // namespace
}  // namespace chorus

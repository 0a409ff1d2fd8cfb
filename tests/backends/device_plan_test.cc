// OpTape (graph capture and replay decisions) against a fake driver that records which ops a
// flush really ran, and PlanQueryTiles on mixed batches. No device needed.
#include "chorus/backends/device_plan.h"

#include <gtest/gtest.h>

#include <string>

namespace chorus {
namespace {

// Ops append their id to `ran` when executed, or to the graph being recorded while capturing;
// launching a graph appends what it recorded.
class FakeDriver : public GraphDriver {
 public:
  bool BeginCapture() override {
    ++begin_calls;
    if (!capture_works) return false;
    capturing = true;
    recording = new std::vector<int>();
    return true;
  }
  void* EndCapture() override {
    capturing = false;
    if (!instantiate_works) {
      delete recording;
      return nullptr;
    }
    ++live;
    return recording;
  }
  bool Launch(void* graph) override {
    ++launches;
    auto* ops = static_cast<std::vector<int>*>(graph);
    ran.insert(ran.end(), ops->begin(), ops->end());
    return true;
  }
  void Destroy(void* graph) override {
    --live;
    delete static_cast<std::vector<int>*>(graph);
  }
  std::function<void()> Op(int id) {
    return [this, id] {
      if (capturing) {
        recording->push_back(id);
      } else {
        ran.push_back(id);
      }
    };
  }

  bool capture_works = true, instantiate_works = true, capturing = false;
  std::vector<int>* recording = nullptr;
  std::vector<int> ran;
  int begin_calls = 0, launches = 0, live = 0;
};

// One decode-like segment: three ops whose arguments include `ptr`.
void PushSegment(OpTape& tape, FakeDriver& d, uint64_t ptr) {
  tape.Push({1, ptr, 64}, d.Op(1));
  tape.Push({2, ptr + 8}, d.Op(2));
  tape.Push({3}, d.Op(3));
}

const std::vector<int> kSegment = {1, 2, 3};

TEST(OpTapeTest, SecondSightCapturesThirdReplaysAndEveryFlushRunsTheSameOps) {
  FakeDriver d;
  OpTape tape(&d, 8);
  tape.set_capturable(true);
  const OpTape::Outcome want[] = {OpTape::Outcome::kEager, OpTape::Outcome::kCaptured,
                                  OpTape::Outcome::kReplayed, OpTape::Outcome::kReplayed};
  for (OpTape::Outcome w : want) {
    d.ran.clear();
    PushSegment(tape, d, 0x1000);
    EXPECT_TRUE(tape.pending());
    EXPECT_EQ(tape.Flush(), w);
    EXPECT_FALSE(tape.pending());
    EXPECT_EQ(d.ran, kSegment);
  }
  EXPECT_EQ(d.begin_calls, 1);
  EXPECT_EQ(tape.stats().eager, 1);
  EXPECT_EQ(tape.stats().captured, 1);
  EXPECT_EQ(tape.stats().replayed, 2);
  EXPECT_EQ(tape.graphs(), 1u);
}

TEST(OpTapeTest, AnyChangedArgumentMissesTheGraph) {
  FakeDriver d;
  OpTape tape(&d, 8);
  tape.set_capturable(true);
  for (int i = 0; i < 3; ++i) {
    PushSegment(tape, d, 0x1000);
    tape.Flush();
  }
  d.ran.clear();
  PushSegment(tape, d, 0x2000);  // e.g. a scratch buffer was reallocated
  EXPECT_EQ(tape.Flush(), OpTape::Outcome::kEager);
  EXPECT_EQ(d.ran, kSegment);
  // The same ops split differently between calls are a different signature too.
  d.ran.clear();
  tape.Push({1, 0x1000}, d.Op(1));
  tape.Push({64, 2, 0x1008}, d.Op(2));
  tape.Push({3}, d.Op(3));
  EXPECT_EQ(tape.Flush(), OpTape::Outcome::kEager);
  EXPECT_EQ(d.ran, kSegment);
}

TEST(OpTapeTest, NotCapturableOrNoDriverRunsEagerly) {
  FakeDriver d;
  OpTape tape(&d, 8);
  for (int i = 0; i < 4; ++i) {
    d.ran.clear();
    PushSegment(tape, d, 0x1000);
    EXPECT_EQ(tape.Flush(), OpTape::Outcome::kEager);
    EXPECT_EQ(d.ran, kSegment);
  }
  EXPECT_EQ(d.begin_calls, 0);
  OpTape plain(nullptr, 8);
  plain.set_capturable(true);
  for (int i = 0; i < 3; ++i) {
    d.ran.clear();
    PushSegment(plain, d, 0x1000);
    EXPECT_EQ(plain.Flush(), OpTape::Outcome::kEager);
    EXPECT_EQ(d.ran, kSegment);
  }
  EXPECT_EQ(tape.Flush(), OpTape::Outcome::kEmpty);
}

TEST(OpTapeTest, FailedCaptureFallsBackToEagerAndIsNotRetried) {
  for (bool begin_fails : {true, false}) {
    FakeDriver d;
    (begin_fails ? d.capture_works : d.instantiate_works) = false;
    OpTape tape(&d, 8);
    tape.set_capturable(true);
    for (int i = 0; i < 5; ++i) {
      d.ran.clear();
      PushSegment(tape, d, 0x1000);
      EXPECT_EQ(tape.Flush(), OpTape::Outcome::kEager);
      EXPECT_EQ(d.ran, kSegment) << "flush " << i;
    }
    EXPECT_EQ(d.begin_calls, 1);
    EXPECT_EQ(tape.stats().capture_failures, 1);
    EXPECT_EQ(tape.stats().eager, 5);
    EXPECT_EQ(d.live, 0);
  }
}

TEST(OpTapeTest, LeastRecentlyUsedGraphIsEvictedAndDestroyed) {
  FakeDriver d;
  OpTape tape(&d, 2);
  tape.set_capturable(true);
  auto run = [&](uint64_t ptr) {
    d.ran.clear();
    PushSegment(tape, d, ptr);
    const OpTape::Outcome o = tape.Flush();
    EXPECT_EQ(d.ran, kSegment);
    return o;
  };
  for (uint64_t p : {0x100, 0x200, 0x300}) {
    run(p);
    run(p);  // captured
  }
  EXPECT_EQ(tape.graphs(), 2u);
  EXPECT_EQ(d.live, 2);
  EXPECT_EQ(tape.stats().evicted, 1);
  EXPECT_EQ(run(0x200), OpTape::Outcome::kReplayed);
  EXPECT_EQ(run(0x300), OpTape::Outcome::kReplayed);
  EXPECT_EQ(run(0x100), OpTape::Outcome::kCaptured);  // evicted, seen before: captured again
  EXPECT_EQ(run(0x300), OpTape::Outcome::kReplayed);
  EXPECT_EQ(run(0x200), OpTape::Outcome::kCaptured);  // 0x200 was least recent
  tape.Clear();
  EXPECT_EQ(d.live, 0);
  EXPECT_EQ(tape.graphs(), 0u);
}

TEST(DevicePlanTest, RoundUpPow2) {
  EXPECT_EQ(RoundUpPow2(0), 1);
  EXPECT_EQ(RoundUpPow2(1), 1);
  EXPECT_EQ(RoundUpPow2(2), 2);
  EXPECT_EQ(RoundUpPow2(3), 4);
  EXPECT_EQ(RoundUpPow2(1000), 1024);
  EXPECT_EQ(RoundUpPow2(1024), 1024);
}

TEST(DevicePlanTest, QueryTilesCoverEveryRowOnce) {
  // seq 0: decode at 7; seq 1: prefill of 40 positions from 0; seq 2: decode at 3;
  // seq 3: three rows at 5,6,8 (a gap breaks the run); seq 1 again at 100..119 (a second chunk).
  std::vector<int32_t> pos = {7}, seq = {0};
  for (int i = 0; i < 40; ++i) pos.push_back(i), seq.push_back(1);
  pos.push_back(3), seq.push_back(2);
  for (int p : {5, 6, 8}) pos.push_back(p), seq.push_back(3);
  for (int i = 0; i < 20; ++i) pos.push_back(100 + i), seq.push_back(1);
  const int n = static_cast<int>(pos.size());
  AttentionPlan plan = PlanQueryTiles(pos.data(), seq.data(), n, 16, 4);
  std::vector<int> covered(n, 0);
  for (const QueryTile& t : plan.tiles) {
    ASSERT_GE(t.count, 1);
    ASSERT_LE(t.count, 16);
    for (int r = t.first; r < t.first + t.count; ++r) {
      ++covered[r];
      if (r > t.first) {
        EXPECT_EQ(seq[r], seq[t.first]);
        EXPECT_EQ(pos[r], pos[r - 1] + 1);
      }
    }
  }
  for (int r : plan.singles) ++covered[r];
  for (int r = 0; r < n; ++r) EXPECT_EQ(covered[r], 1) << "row " << r;
  ASSERT_EQ(plan.tiles.size(), 5u);  // 16 + 16 + 8 for the 40-row run, 16 + 4 for the 20-row run
  EXPECT_EQ(plan.tiles[0].first, 1);
  EXPECT_EQ(plan.tiles[2].count, 8);
  EXPECT_EQ(plan.tiles[4].count, 4);
  EXPECT_EQ(plan.singles, (std::vector<int32_t>{0, 41, 42, 43, 44}));
}

}  // namespace
}  // namespace chorus

// The runtime (scheduler + engine + agents) in-process on the real stories260K model: KV
// pressure forces preemption by recompute, yet every request completes with the same greedy
// text as alone and no block leaks; priority decides admission order.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "../collect_sink.h"
#include "../test_util.h"
#include "absl/strings/str_cat.h"
#include "chorus/backends/cpu_backend.h"
#include "chorus/runtime/runtime.h"

namespace chorus {
namespace {

using testing::CollectSink;

class RuntimeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = CreateCpuBackend(2);
    auto m = Model::Load(testing::SourcePath("models/stories260K.gguf"), backend_.get());
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
  }
  // start = false: the caller starts the engine loop (requests submitted before then are all
  // waiting when it first schedules).
  std::unique_ptr<Runtime> Make(int blocks, int block_size, RuntimeOptions o = {},
                                bool start = true) {
    o.kv_num_blocks = blocks;
    o.kv_block_size = block_size;
    auto r = Runtime::Create(o, model_.get(), backend_.get(), &clock_);
    EXPECT_TRUE(r.ok());
    if (start) (*r)->Start();
    return std::move(*r);
  }
  GenerateParams Params(const std::string& id, const std::string& prompt, int agents,
                        int max_tokens) {
    GenerateParams p;
    p.request_id = id;
    p.prompt_tokens = model_->tokenizer().Encode(prompt, true, false);
    p.reasoning.agents = agents;
    p.max_tokens = max_tokens;
    p.sampling.temperature = 0;
    p.arrival_ms = clock_.NowMs();
    p.deadline_ms = p.arrival_ms + 120000;
    return p;
  }
  RealClock clock_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
};

TEST_F(RuntimeTest, KvPressurePreemptsByRecomputeAndEveryRequestCompletes) {
  std::vector<std::string> alone;
  {
    auto rt = Make(512, 4);
    for (const char* prompt : {"Once upon a time", "Lily and Ben", "The dog"}) {
      auto sink = std::make_shared<CollectSink>();
      ASSERT_TRUE(rt->Submit(Params(prompt, prompt, 1, 40), sink).ok());
      auto r = sink->Wait();
      ASSERT_TRUE(r.ok()) << r.status();
      alone.push_back(r->text);
    }
  }
  // One group needs up to 2 + 4 x (10 + 1) = 46 blocks of 4 tokens: three of them cannot fit
  // in 48 at once.
  auto rt = Make(48, 4);
  std::vector<std::shared_ptr<CollectSink>> sinks;
  int i = 0;
  for (const char* prompt : {"Once upon a time", "Lily and Ben", "The dog"}) {
    sinks.push_back(std::make_shared<CollectSink>());
    ASSERT_TRUE(rt->Submit(Params(std::to_string(i++), prompt, 4, 40), sinks.back()).ok());
  }
  for (size_t k = 0; k < sinks.size(); ++k) {
    auto r = sinks[k]->Wait();
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->drafts.size(), 4u);
    for (const auto& d : r->drafts) EXPECT_EQ(d.text, alone[k]) << "agent " << d.agent;
  }
  for (int w = 0; w < 200 && rt->Stats().kv_blocks_used != 0; ++w) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const RuntimeStats s = rt->Stats();
  EXPECT_GT(s.preemptions, 0);
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.requests_completed, 3);
}

// All three wait before the loop starts (when they raced a running loop, a blocker that finished
// before "high" was submitted let "low" in first: a flaky failure under ASan in CI).
TEST_F(RuntimeTest, HigherPriorityIsAdmittedFirst) {
  auto rt = Make(48, 4, {}, /*start=*/false);  // room for one 4-agent group at a time
  auto low = std::make_shared<CollectSink>(), high = std::make_shared<CollectSink>();
  auto blocker = std::make_shared<CollectSink>();
  ASSERT_TRUE(rt->Submit(Params("blocker", "Once upon a time", 4, 40), blocker).ok());
  auto pl = Params("low", "Lily", 4, 40);
  pl.priority = -5;
  auto ph = Params("high", "Ben", 4, 40);
  ph.priority = 5;
  ASSERT_TRUE(rt->Submit(std::move(pl), low).ok());
  ASSERT_TRUE(rt->Submit(std::move(ph), high).ok());
  rt->Start();
  auto rh = high->Wait();
  auto rl = low->Wait();
  ASSERT_TRUE(rh.ok() && rl.ok());
  EXPECT_LT(rh->queue_ms, rl->queue_ms);
}

// max_queue_delay_ms sheds a request that could not start in time (the server is at
// capacity): RESOURCE_EXHAUSTED naming the setting, while the running request is untouched.
// Without the setting the same request waits and completes.
TEST_F(RuntimeTest, ARequestThatWaitsPastMaxQueueDelayIsShed) {
  for (const double delay_ms : {5.0, 0.0}) {
    RuntimeOptions o;
    o.scheduler.max_running_agents = 4;  // the blocker's 4 agents fill it
    o.max_queue_delay_ms = delay_ms;
    auto rt = Make(512, 16, o);
    auto blocker = std::make_shared<CollectSink>(), waiter = std::make_shared<CollectSink>();
    ASSERT_TRUE(rt->Submit(Params("blocker", "Once upon a time", 4, 200), blocker).ok());
    ASSERT_TRUE(rt->Submit(Params("waiter", "Lily", 4, 8), waiter).ok());
    const auto rw = waiter->Wait();
    const auto rb = blocker->Wait();
    ASSERT_TRUE(rb.ok()) << rb.status();
    if (delay_ms > 0) {
      ASSERT_TRUE(absl::IsResourceExhausted(rw.status())) << rw.status();
      EXPECT_NE(rw.status().message().find("max_queue_delay_ms 5"), std::string::npos)
          << rw.status();
    } else {
      EXPECT_TRUE(rw.ok()) << rw.status();
    }
    // Stats are a snapshot the engine thread publishes each iteration: wait for it.
    for (int w = 0; w < 200 && rt->Stats().kv_blocks_used != 0; ++w) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(rt->Stats().kv_blocks_used, 0) << "max_queue_delay_ms " << delay_ms;
  }
}

TEST_F(RuntimeTest, BudgetCutsDraftsAndMergesWhatExists) {
  auto rt = Make(512, 16);
  auto sink = std::make_shared<CollectSink>();
  auto p = Params("budget", "Once upon a time", 4, 4000);
  p.sampling.temperature = 1.0f;
  p.deadline_ms = clock_.NowMs() + 300;
  ASSERT_TRUE(rt->Submit(std::move(p), sink).ok());
  auto r = sink->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->budget_cut);
  EXPECT_FALSE(r->text.empty());
  int cut = 0;
  for (const auto& d : r->drafts) {
    // A draft may end on its own (EOS) first; none may run past the budget.
    EXPECT_TRUE(d.finish == FinishReason::kBudget || d.finish == FinishReason::kEndOfText);
    cut += d.finish == FinishReason::kBudget;
  }
  EXPECT_GT(cut, 0);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

TEST_F(RuntimeTest, SynthesizeRunsAnExtraPassWhenTheBudgetAllows) {
  auto rt = Make(1024, 16);
  auto sink = std::make_shared<CollectSink>();
  auto p = Params("synth", "Once upon a time", 3, 16);
  p.sampling.temperature = 0.8f;
  p.sampling.seed = 5;
  p.reasoning.merge = MergeStrategy::kSynthesize;
  ASSERT_TRUE(rt->Submit(std::move(p), sink).ok());
  auto r = sink->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->merge.strategy, MergeStrategy::kSynthesize);
  EXPECT_EQ(r->merge.winner, -1);
  ASSERT_EQ(r->drafts.size(), 3u);  // the synthesizer is not a draft
  EXPECT_FALSE(r->text.empty());
  int draft_tokens = 0;
  for (const auto& d : r->drafts) draft_tokens += d.num_tokens;
  EXPECT_GT(r->completion_tokens, draft_tokens);  // the extra pass generated tokens
}

TEST_F(RuntimeTest, SynthesizeFallsBackToVoteWhenThePassCannotFit) {
  auto rt = Make(2048, 16);
  auto sink = std::make_shared<CollectSink>();
  // Greedy drafts run at least 256 tokens without an end (the published text): 4 of them
  // cannot be read back with 1200 tokens to spare in the 2048-token context.
  auto p = Params("synth-fallback", "", 4, 1200);
  p.prompt_tokens = {1};
  p.reasoning.merge = MergeStrategy::kSynthesize;
  ASSERT_TRUE(rt->Submit(std::move(p), sink).ok());
  auto r = sink->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->merge.strategy, MergeStrategy::kVote);
  EXPECT_GE(r->merge.winner, 0);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

TEST_F(RuntimeTest, ConfidenceMergeStopsUnsureDraftsEarly) {
  auto rt = Make(512, 16);
  auto sink = std::make_shared<CollectSink>();
  auto p = Params("confidence", "Once upon a time", 4, 64);
  p.sampling.temperature = 1.0f;
  p.reasoning.merge = MergeStrategy::kConfidence;
  p.reasoning.confidence_threshold = 0.99f;  // no 4-token window of a sampled story is this sure
  p.reasoning.confidence_window = 4;
  ASSERT_TRUE(rt->Submit(std::move(p), sink).ok());
  auto r = sink->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->merge.strategy, MergeStrategy::kConfidence);
  // Every draft is unsure, so all are stopped after 4 tokens but two: the low-confidence stop
  // leaves two other drafts that can answer, and the answer is one of the survivors.
  std::vector<int> survivors;
  for (const auto& d : r->drafts) {
    if (d.finish == FinishReason::kLowConfidence) {
      EXPECT_EQ(d.num_tokens, 4) << d.agent;
    } else {
      survivors.push_back(d.agent);
      EXPECT_TRUE(d.finish == FinishReason::kEndOfText || d.finish == FinishReason::kLength)
          << d.agent;
    }
  }
  ASSERT_EQ(survivors.size(), 2u);
  EXPECT_TRUE(r->merge.winner == survivors[0] || r->merge.winner == survivors[1]);
  EXPECT_FALSE(r->text.empty());
}

TEST_F(RuntimeTest, FirstStopsTheOtherDraftsWhenOneFinishes) {
  auto rt = Make(512, 16);
  auto sink = std::make_shared<CollectSink>();
  auto p = Params("first", "Once upon a time", 3, 24);
  p.sampling.temperature = 0.8f;
  p.reasoning.merge = MergeStrategy::kFirst;
  ASSERT_TRUE(rt->Submit(std::move(p), sink).ok());
  auto r = sink->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  int natural = 0;
  for (const auto& d : r->drafts) {
    natural += d.finish == FinishReason::kLength || d.finish == FinishReason::kEndOfText;
    EXPECT_TRUE(d.finish == FinishReason::kLength || d.finish == FinishReason::kEndOfText ||
                d.finish == FinishReason::kConsensus);
  }
  EXPECT_GE(natural, 1);
  const auto& w = r->drafts[r->merge.winner];
  EXPECT_TRUE(w.finish == FinishReason::kLength || w.finish == FinishReason::kEndOfText);
  EXPECT_EQ(r->text, w.text);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

// Issue 11, finding 2: a SYNTHESIZE pass larger than the KV cache used to preempt its own
// group again and again (it could never be re-admitted), holding the queue until the budget
// cut it. Now the pass starts only when its blocks are free; else the vote stands at once.
TEST_F(RuntimeTest, SynthesisThatCannotFitTheFreeBlocksFallsBackToVoteAtOnce) {
  // 4 greedy drafts of 160 tokens need 1 + 4 x 10 = 41 blocks of 16; the pass (the prompt,
  // ~640 tokens of drafts, 160 to generate) needs about 51: more than the 46 in the cache.
  auto rt = Make(46, 16);
  auto sink = std::make_shared<CollectSink>();
  auto p = Params("synth-too-big", "", 4, 160);
  p.prompt_tokens = {1};
  p.reasoning.merge = MergeStrategy::kSynthesize;
  p.deadline_ms = clock_.NowMs() + 30000;  // the old loop ran until the budget cut it
  ASSERT_TRUE(rt->Submit(std::move(p), sink).ok());
  auto behind = std::make_shared<CollectSink>();
  ASSERT_TRUE(rt->Submit(Params("behind", "Lily", 1, 8), behind).ok());
  auto r = sink->Wait();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->merge.strategy, MergeStrategy::kVote);
  EXPECT_FALSE(r->budget_cut);
  EXPECT_TRUE(behind->Wait().ok());
  EXPECT_EQ(rt->Stats().preemptions, 0);
}

// Many client threads against one engine thread, with nothing but the runtime's own
// synchronization between them (no gRPC): the ThreadSanitizer run in CI (make test-tsan) checks
// Submit, Abort, Stats and CheckCapacity from clients while the engine
// thread steps, preempts, merges and completes. Every accepted request ends exactly once with
// OK, CANCELLED or DEADLINE_EXCEEDED, and the cache is empty afterwards.
TEST_F(RuntimeTest, ConcurrentClientsSubmitAbortAndReadStatsWhileTheEngineRuns) {
  auto rt = Make(40, 8);  // ~a third of what 6 clients x up to 4 agents x 48 tokens need
  constexpr int kClients = 6, kPerClient = 8;
  const MergeStrategy kMerges[] = {MergeStrategy::kVote, MergeStrategy::kConfidence,
                                   MergeStrategy::kSynthesize, MergeStrategy::kFirst,
                                   MergeStrategy::kBestLogprob};
  std::atomic<bool> stop{false};
  std::atomic<int> accepted{0}, ended_ok{0}, ended_cancelled{0}, ended_expired{0}, ended_other{0};
  std::thread observer([&] {
    while (!stop.load()) {
      const RuntimeStats s = rt->Stats();
      EXPECT_LE(s.kv_blocks_used, s.kv_blocks_total);
      (void)rt->CheckCapacity(2);
      (void)rt->Idle();
      (void)rt->InFlight();
      (void)rt->LastProgressMs();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&, c] {
      std::mt19937 rng(77 + c);
      for (int i = 0; i < kPerClient; ++i) {
        const std::string id = absl::StrCat("c", c, "-", i);
        GenerateParams p =
            Params(id, i % 2 ? "Once upon a time" : "Lily and Ben", 1 + rng() % 4, 48);
        p.owner = absl::StrCat("client-", c % 3);  // ids collide across owners on purpose
        p.sampling.temperature = 0.8f;
        p.sampling.seed = rng();
        p.reasoning.merge = kMerges[rng() % 5];
        if (rng() % 4 == 0) p.deadline_ms = p.arrival_ms + 20 + rng() % 200;
        auto sink = std::make_shared<CollectSink>();
        if (!rt->Submit(p, sink).ok()) continue;  // a full queue is a definite answer too
        ++accepted;
        if (rng() % 4 == 0) {
          std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 30));
          rt->Abort(p.owner, id);
        }
        const auto r = sink->Wait();
        if (r.ok()) {
          ++ended_ok;
        } else if (absl::IsCancelled(r.status())) {
          ++ended_cancelled;
        } else if (absl::IsDeadlineExceeded(r.status())) {
          ++ended_expired;
        } else {
          ++ended_other;
          ADD_FAILURE() << id << ": " << r.status();
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  for (int w = 0; w < 400 && (!rt->Idle() || rt->Stats().kv_blocks_used != 0); ++w) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  observer.join();
  EXPECT_GT(ended_ok.load(), 0);
  EXPECT_EQ(ended_ok + ended_cancelled + ended_expired + ended_other, accepted.load());
  const RuntimeStats s = rt->Stats();
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_EQ(s.running_requests + s.waiting_requests, 0);
  EXPECT_EQ(s.requests_completed, ended_ok.load());
}

}  // namespace
}  // namespace chorus

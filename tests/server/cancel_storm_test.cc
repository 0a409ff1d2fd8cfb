// 64 concurrent streams with random client cancels: every call ends OK or CANCELLED, and the
// KV cache returns to idle.
#include <random>
#include <thread>

#include "server_fixture.h"

namespace chorus {
namespace {

using testing::ServerTest;
namespace pb = chorus::v1;

TEST_F(ServerTest, SixtyFourStreamsWithRandomCancelsAllEndCleanly) {
  const auto idle = IdleStats();
  constexpr int kStreams = 64;
  std::vector<grpc::StatusCode> codes(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937 rng(i);
      pb::GenerateRequest r;
      r.set_prompt(i % 2 ? "Once upon a time" : "Lily and Ben went to the park");
      r.set_max_tokens(64 + static_cast<int>(rng() % 128));
      r.mutable_sampling()->set_temperature(0.8f);
      r.mutable_reasoning()->set_agents(1 + static_cast<int>(rng() % 4));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
      auto reader = stub_->GenerateStream(&ctx, r);
      const bool cancel = rng() % 2 == 0;
      const int cancel_after = static_cast<int>(rng() % 20);
      pb::GenerateEvent e;
      int events = 0;
      while (reader->Read(&e)) {
        if (cancel && ++events >= cancel_after) ctx.TryCancel();
      }
      if (cancel && cancel_after == 0) ctx.TryCancel();
      codes[i] = reader->Finish().error_code();
    });
  }
  for (auto& t : threads) t.join();
  int ok = 0, cancelled = 0;
  for (auto c : codes) {
    EXPECT_TRUE(c == grpc::OK || c == grpc::CANCELLED) << c;
    ok += c == grpc::OK;
    cancelled += c == grpc::CANCELLED;
  }
  EXPECT_EQ(ok + cancelled, kStreams);
  EXPECT_GT(cancelled, 0);
  const auto after = IdleStats();
  EXPECT_EQ(after.kv_blocks_used(), idle.kv_blocks_used());
  EXPECT_EQ(after.running_requests(), 0);
  EXPECT_EQ(after.waiting_requests(), 0);
  // Still serving.
  pb::GenerateRequest r;
  r.set_prompt("Once");
  r.set_max_tokens(4);
  pb::GenerateResponse resp;
  EXPECT_TRUE(Generate(r, &resp).ok());
}

}  // namespace
}  // namespace chorus

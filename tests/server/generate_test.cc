// End to end over gRPC on 127.0.0.1: the published greedy text, N agents sharing the prompt's
// KV, the prefix cache, continuous batching, streaming, health, and idle KV after requests.
#include <grpcpp/health_check_service_interface.h>

#include <set>
#include <thread>

#include "server_fixture.h"

namespace chorus {
namespace {

using testing::ServerTest;
namespace pb = chorus::v1;

using testing::kPublishedGreedy;

pb::GenerateRequest Greedy(const std::string& prompt, int max_tokens) {
  pb::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(max_tokens);
  r.mutable_sampling()->set_temperature(0);
  return r;
}

TEST_F(ServerTest, GreedyGenerateReturnsThePublishedText) {
  pb::GenerateResponse resp;
  const grpc::Status s = Generate(Greedy("", 256), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.text(), kPublishedGreedy);
  EXPECT_EQ(resp.finish_reason(), pb::LENGTH);
  EXPECT_EQ(resp.usage().completion_tokens(), 256);
  EXPECT_EQ(resp.usage().prompt_tokens(), 1);
}

TEST_F(ServerTest, EightAgentsShareOnePrefillAndTheSecondRequestHitsThePrefixCache) {
  const auto idle = IdleStats();
  pb::GenerateRequest r;
  // 40 prompt tokens or more: at least two full 16-token blocks for the prefix cache.
  r.set_prompt(
      "Once upon a time, there was a little girl named Lily. She loved to play outside "
      "in the park. One day, she saw a big red ball.");
  r.set_max_tokens(24);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_seed(11);
  r.mutable_reasoning()->set_agents(8);
  r.mutable_reasoning()->set_return_drafts(true);
  r.mutable_reasoning()->set_merge(pb::BEST_LOGPROB);
  pb::GenerateResponse a;
  ASSERT_TRUE(Generate(r, &a).ok());
  ASSERT_EQ(a.drafts_size(), 8);
  std::set<std::string> texts;
  for (const auto& d : a.drafts()) texts.insert(d.text());
  EXPECT_EQ(texts.size(), 8u) << "drafts are not distinct";
  const int plen = a.usage().prompt_tokens();
  ASSERT_GT(plen, 32);
  EXPECT_EQ(a.usage().computed_prompt_tokens(), plen);  // once, not 8 times
  EXPECT_EQ(a.usage().cached_prompt_tokens(), 0);
  EXPECT_EQ(a.merge().strategy(), pb::BEST_LOGPROB);

  pb::GenerateResponse b;
  ASSERT_TRUE(Generate(r, &b).ok());
  EXPECT_EQ(b.usage().cached_prompt_tokens(), plen / 16 * 16);
  EXPECT_EQ(b.usage().computed_prompt_tokens(), plen - plen / 16 * 16);
  // Same seeds, same prompt: the cached prefix gives the same drafts.
  for (int i = 0; i < 8; ++i) EXPECT_EQ(a.drafts(i).text(), b.drafts(i).text());

  const auto after = IdleStats();
  EXPECT_EQ(after.kv_blocks_used(), idle.kv_blocks_used());
  EXPECT_EQ(after.running_agents(), 0);
  EXPECT_GT(after.prefix_cache_blocks(), 0);
}

TEST_F(ServerTest, ARequestArrivingMidDecodeJoinsTheRunningBatch) {
  pb::GenerateResponse alone_a, alone_b;
  const auto ra = Greedy("Once upon a time", 200);
  const auto rb = Greedy("Lily and Ben", 60);
  ASSERT_TRUE(Generate(ra, &alone_a).ok());
  ASSERT_TRUE(Generate(rb, &alone_b).ok());

  const int64_t steps_before = IdleStats().steps_run();
  pb::GenerateResponse joint_a, joint_b;
  std::thread t([&] { ASSERT_TRUE(Generate(ra, &joint_a).ok()); });
  // Wait until A is decoding, then send B.
  for (int i = 0; i < 1000 && Stats().running_requests() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(Generate(rb, &joint_b).ok());
  t.join();
  const int64_t steps = IdleStats().steps_run() - steps_before;
  EXPECT_EQ(joint_a.text(), alone_a.text());
  EXPECT_EQ(joint_b.text(), alone_b.text());
  // Run separately they would take about 200 + 60 steps; sharing steps proves the join.
  EXPECT_LT(steps, 200 + 60 + 2) << "B did not join A's batch";
  EXPECT_GE(steps, 200);
}

TEST_F(ServerTest, StreamDeltasConcatenateToEachDraft) {
  pb::GenerateRequest r;
  r.set_prompt("Once upon a time");
  r.set_max_tokens(40);
  r.mutable_sampling()->set_temperature(1.0f);
  r.mutable_sampling()->set_seed(3);
  r.mutable_reasoning()->set_agents(4);
  r.mutable_reasoning()->set_return_drafts(true);
  r.add_stop("Lily");
  grpc::ClientContext ctx;
  auto reader = stub_->GenerateStream(&ctx, r);
  pb::GenerateEvent e;
  std::map<int, std::string> streamed;
  std::set<int> finished;
  pb::GenerateResponse result;
  int results = 0;
  while (reader->Read(&e)) {
    if (e.has_delta()) {
      EXPECT_EQ(finished.count(e.delta().agent()), 0u) << "delta after agent finished";
      streamed[e.delta().agent()] += e.delta().text();
    } else if (e.has_agent_finished()) {
      finished.insert(e.agent_finished().agent());
    } else if (e.has_result()) {
      result = e.result();
      ++results;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(results, 1);
  EXPECT_EQ(finished.size(), 4u);
  ASSERT_EQ(result.drafts_size(), 4);
  for (const auto& d : result.drafts()) {
    EXPECT_EQ(streamed[d.agent()], d.text()) << "agent " << d.agent();
    EXPECT_EQ(d.text().find("Lily"), std::string::npos);
  }
}

TEST_F(ServerTest, HealthListModelsAndAbortOfUnknownId) {
  grpc::ClientContext hctx;
  pb::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&hctx, {}, &models).ok());
  ASSERT_EQ(models.models_size(), 1);
  EXPECT_EQ(models.models(0).architecture(), "llama");
  EXPECT_EQ(models.models(0).vocab_size(), 512);
  grpc::ClientContext actx;
  pb::AbortRequest ar;
  ar.set_request_id("nope");
  pb::AbortResponse aresp;
  ASSERT_TRUE(stub_->Abort(&actx, ar, &aresp).ok());
  EXPECT_FALSE(aresp.found());
}

TEST_F(ServerTest, AbortCancelsARunningRequestAndFreesItsBlocks) {
  pb::GenerateRequest r = Greedy("Once upon a time", 2000);
  r.set_request_id("abort-me");
  r.mutable_reasoning()->set_agents(4);
  grpc::Status status;
  std::thread t([&] {
    pb::GenerateResponse resp;
    status = Generate(r, &resp);
  });
  bool found = false;
  for (int i = 0; i < 2000 && !found; ++i) {
    grpc::ClientContext ctx;
    pb::AbortRequest ar;
    ar.set_request_id("abort-me");
    pb::AbortResponse resp;
    ASSERT_TRUE(stub_->Abort(&ctx, ar, &resp).ok());
    found = resp.found();
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  t.join();
  EXPECT_TRUE(found);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();
  EXPECT_EQ(IdleStats().kv_blocks_used(), 0);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

class TensorParallelServerTest : public testing::ServerTest {
 protected:
  void Configure(chorus::v1::ServerConfig& c) override { c.set_tensor_parallel_size(2); }
};

// stories260K has 8 heads and 4 KV heads: two CPU ranks serve it; the greedy text is unchanged.
TEST_F(TensorParallelServerTest, TwoRanksServeThePublishedGreedyText) {
  chorus::v1::GenerateResponse resp;
  const grpc::Status s = Generate(Greedy("", 256), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.text(), kPublishedGreedy);
  grpc::ClientContext ctx;
  chorus::v1::ListModelsResponse models;
  ASSERT_TRUE(stub_->ListModels(&ctx, {}, &models).ok());
  EXPECT_EQ(models.models(0).backend(), "cpu x2");
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

using testing::HttpGet;

TEST_F(ServerTest, PrometheusMetricsCountRequestsAndExposeKvGauges) {
  ASSERT_GT(server_->metrics_port(), 0);
  chorus::v1::GenerateResponse resp;
  ASSERT_TRUE(Generate(Greedy("Once upon a time", 8), &resp).ok());
  chorus::v1::GenerateRequest bad = Greedy("x", 8);
  bad.mutable_sampling()->set_temperature(-1);
  EXPECT_FALSE(Generate(bad, &resp).ok());  // rejected at admission: never reaches the runtime
  IdleStats();
  const std::string text = HttpGet(server_->metrics_port(), "/metrics");
  EXPECT_NE(text.find("chorus_requests_total{status=\"ok\"} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("chorus_kv_blocks_total 1024"), std::string::npos);
  EXPECT_NE(text.find("chorus_request_duration_seconds_count 1"), std::string::npos);
  EXPECT_NE(text.find("chorus_generated_tokens_total 8"), std::string::npos);
  EXPECT_NE(text.find("chorus_step_duration_seconds_bucket"), std::string::npos);
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

// Elastic agents over gRPC (issue 14): an idle server with a generous budget gives the range's
// maximum; the choice is in the response, the drafts match it; bad ranges name the field.
TEST_F(ServerTest, ElasticAgentsTakeTheMaximumWhenIdleAndReportTheChoice) {
  pb::GenerateRequest r = Greedy("Once upon a time", 16);
  r.mutable_sampling()->set_temperature(0.8f);
  r.mutable_reasoning()->set_min_agents(2);
  r.mutable_reasoning()->set_max_agents(6);
  r.mutable_reasoning()->set_return_drafts(true);
  r.set_latency_budget_ms(30000);
  pb::GenerateResponse resp;
  const grpc::Status s = Generate(r, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(resp.agents(), 6);
  EXPECT_EQ(resp.drafts_size(), 6);

  r.mutable_reasoning()->set_agents(3);  // a count and a range: refused
  EXPECT_EQ(Generate(r, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  r.mutable_reasoning()->set_agents(0);
  r.mutable_reasoning()->set_min_agents(7);  // min > max
  const grpc::Status bad = Generate(r, &resp);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(bad.error_message().find("reasoning.min_agents"), std::string::npos)
      << bad.error_message();
  // A fixed count reports itself too.
  pb::GenerateRequest fixed = Greedy("Once upon a time", 8);
  fixed.mutable_reasoning()->set_agents(3);
  ASSERT_TRUE(Generate(fixed, &resp).ok());
  EXPECT_EQ(resp.agents(), 3);
}

}  // namespace
}  // namespace chorus

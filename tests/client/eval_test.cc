// chorus eval (src/client/eval*.cc): answer extraction, the Wilson interval against values
// computed by hand, scoring, and a whole run against a fake server (no network).
#include "eval.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <nlohmann/json.hpp>

#include "client.h"

namespace chorus::client {
namespace {

namespace pb = chorus::v1;

// chorus bench --http sends what the gRPC request would: elastic ranges and CONFIDENCE's
// early-stop settings included.
TEST(HttpBench, BodyCarriesElasticAndConfidenceFields) {
  HttpTarget t;
  t.model = "m";
  pb::GenerateRequest req;
  req.set_prompt("p");
  req.set_max_tokens(8);
  req.mutable_reasoning()->set_agents(4);
  req.mutable_reasoning()->set_merge(pb::CONFIDENCE);
  req.mutable_reasoning()->set_confidence_threshold(0.5f);
  req.mutable_reasoning()->set_confidence_window(1);
  auto j = nlohmann::json::parse(HttpBenchBody(t, req));
  EXPECT_EQ(j["chorus"]["agents"], 4);
  EXPECT_EQ(j["chorus"]["merge"], "confidence");
  EXPECT_FLOAT_EQ(j["chorus"]["confidence_threshold"].get<float>(), 0.5f);
  EXPECT_EQ(j["chorus"]["confidence_window"], 1);
  req.mutable_reasoning()->set_agents(0);
  req.mutable_reasoning()->set_min_agents(2);
  req.mutable_reasoning()->set_max_agents(6);
  j = nlohmann::json::parse(HttpBenchBody(t, req));
  EXPECT_FALSE(j["chorus"].contains("agents"));
  EXPECT_EQ(j["chorus"]["min_agents"], 2);
  EXPECT_EQ(j["chorus"]["max_agents"], 6);
  pb::GenerateRequest plain;
  plain.set_prompt("p");
  j = nlohmann::json::parse(HttpBenchBody(t, plain));
  EXPECT_FALSE(j["chorus"].contains("confidence_threshold"));
  EXPECT_FALSE(j["chorus"].contains("min_agents"));
}

TEST(Eval, ParsesJsonl) {
  std::vector<EvalProblem> p;
  std::string error;
  ASSERT_TRUE(ParseDataset(
      "{\"question\": \"1+1?\", \"answer\": \"2\"}\n\n{\"question\": \"q\", \"answer\": 42}\n", &p,
      &error));
  ASSERT_EQ(p.size(), 2u);
  EXPECT_EQ(p[1].answer, "42");
  p.clear();
  EXPECT_FALSE(ParseDataset("{\"question\": 1}\n", &p, &error));
  EXPECT_NE(error.find("line 1"), std::string::npos);
  EXPECT_FALSE(ParseDataset("\n", &p, &error));
}

TEST(Eval, ExtractsAndNormalizesAnswers) {
  EXPECT_EQ(NormalizeAnswer("  The  Answer. "), "the answer");
  EXPECT_EQ(NormalizeAnswer("1,024"), "1024");
  EXPECT_EQ(ExtractAnswer("12 + 30 = 42, so answer: 42", "answer: (-?\\d+)"), "42");
  // The last match wins, its first group.
  EXPECT_EQ(ExtractAnswer("answer: 1 ... answer: 7", "answer: (\\d+)"), "7");
  EXPECT_EQ(ExtractAnswer("no match", "answer: (\\d+)"), "");
  // No regex: the last number, else the whole text.
  EXPECT_EQ(ExtractAnswer("3 apples and 1,500 pears", ""), "1500");
  EXPECT_EQ(ExtractAnswer("Paris.", ""), "paris");
  // GSM8K-style references: the text after the last "####".
  EXPECT_EQ(ReferenceAnswer("19+704=723\nanswer: 723\n#### 723"), "723");
  EXPECT_EQ(ReferenceAnswer(" 1,024 "), "1024");
}

TEST(Eval, WilsonIntervalMatchesHandComputedValues) {
  // n = 10, k = 7, z = 1.96: center 0.6305, half 0.2548 -> [0.3968, 0.8922].
  Interval i = Wilson(7, 10);
  EXPECT_NEAR(i.lo, 0.3968, 5e-4);
  EXPECT_NEAR(i.hi, 0.8922, 5e-4);
  // k = 0: [0, z^2 / (n + z^2)] = [0, 0.2775] for n = 10.
  i = Wilson(0, 10);
  EXPECT_DOUBLE_EQ(i.lo, 0);
  EXPECT_NEAR(i.hi, 3.8416 / 13.8416, 1e-4);
  i = Wilson(100, 100);
  EXPECT_DOUBLE_EQ(i.hi, 1);
  EXPECT_NEAR(i.lo, 100 / 103.8416, 1e-4);
}

std::vector<EvalProblem> Tiny() {
  std::vector<EvalProblem> p;
  for (int i = 0; i < 10; ++i)
    p.push_back({"what is " + std::to_string(i) + " + 1?", std::to_string(i + 1)});
  return p;
}

TEST(Eval, ScoresCorrectWrongAndFailedCalls) {
  const auto problems = Tiny();
  std::vector<EvalOutcome> out(10);
  for (int i = 0; i < 10; ++i) {
    out[i].ok = i != 9;  // one failed call: wrong, and an error
    out[i].text = "so answer: " + std::to_string(i < 6 ? i + 1 : i);  // 6 right
    out[i].latency_ms = 10 * (i + 1);
    out[i].completion_tokens = 20;
    out[i].drafts_stopped_early = i % 2;
    out[i].budget_cut = i == 0;
    out[i].agents_used = 4;
  }
  EvalRow r = Score({4, "vote"}, problems, out, "answer: (\\d+)");
  EXPECT_EQ(r.n, 10);
  EXPECT_EQ(r.correct, 6);
  EXPECT_EQ(r.errors, 1);
  EXPECT_DOUBLE_EQ(r.accuracy, 0.6);
  EXPECT_NEAR(r.latency_mean, 50, 1e-9);  // 10..90 ms over the 9 successful calls
  EXPECT_DOUBLE_EQ(r.latency_p50, 50);
  EXPECT_DOUBLE_EQ(r.tokens_mean, 20);
  EXPECT_NEAR(r.early_stopped_mean, 4.0 / 9, 1e-9);
  EXPECT_NEAR(r.budget_cut_fraction, 1.0 / 9, 1e-9);
  EXPECT_DOUBLE_EQ(r.agents_mean, 4);
}

// A fake server: answers right with probability growing with the agents it is asked for.
TEST(Eval, RunsEverySettingAgainstAFakeServer) {
  const auto problems = Tiny();
  std::vector<EvalSetting> settings = {{1, "vote"}, {4, "vote"}, {4, "confidence"}};
  EvalSetting elastic;
  elastic.min_agents = 2;
  elastic.max_agents = 8;
  settings.push_back(elastic);
  pb::GenerateRequest base;
  base.set_max_tokens(32);
  std::mutex mu;
  std::vector<pb::GenerateRequest> seen;
  auto fake = [&](const pb::GenerateRequest& req) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.push_back(req);
    }
    EvalOutcome o;
    o.ok = true;
    const int q = std::stoi(req.prompt().substr(req.prompt().find("what is ") + 8));
    const int agents =
        req.reasoning().max_agents() > 0 ? req.reasoning().max_agents() : req.reasoning().agents();
    // One agent is right on even questions only; more agents on every question.
    const bool right = agents > 1 || q % 2 == 0;
    o.text = "answer: " + std::to_string(right ? q + 1 : q + 2);
    o.agents_used = agents;
    o.latency_ms = agents;
    return o;
  };
  auto rows = RunEvalWith(problems, settings, base, "Q: {question}\nA:", "answer: (\\d+)", 3, fake);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].correct, 5);
  EXPECT_EQ(rows[1].correct, 10);
  EXPECT_EQ(rows[3].setting.Label(), "elastic 2-8 vote");
  EXPECT_DOUBLE_EQ(rows[3].agents_mean, 8);
  ASSERT_EQ(seen.size(), 40u);
  for (const auto& req : seen) {
    EXPECT_EQ(req.prompt().rfind("Q: what is ", 0), 0u) << "the template wraps the question";
    EXPECT_TRUE(req.reasoning().return_drafts());
    EXPECT_EQ(req.max_tokens(), 32);
    if (req.reasoning().max_agents() > 0) {
      EXPECT_EQ(req.reasoning().agents(), 0);
      EXPECT_EQ(req.reasoning().min_agents(), 2);
    }
  }
  // The machine-readable and plotted forms carry every setting.
  auto j = nlohmann::json::parse(FormatJson(rows));
  ASSERT_EQ(j.size(), 4u);
  EXPECT_DOUBLE_EQ(j[1]["accuracy"].get<double>(), 1.0);
  const std::string svg = FormatSvg(rows, "t");
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("4 confidence"), std::string::npos);
  EXPECT_NE(FormatTable(rows).find("elastic 2-8 vote"), std::string::npos);
}

// --retries: what the other side did (a proxy reset, a replica gone) is retried; what the request
// itself did wrong is not.
TEST(RetryableTest, RetriesTheOtherSidesFailuresOnly) {
  using grpc::Status;
  using grpc::StatusCode;
  EXPECT_TRUE(Retryable(Status(StatusCode::UNAVAILABLE, "server is draining")));
  EXPECT_TRUE(Retryable(Status(StatusCode::CANCELLED, "Cancelled")));
  EXPECT_TRUE(Retryable(Status(StatusCode::UNKNOWN, "Stream removed")));
  EXPECT_TRUE(Retryable(Status(StatusCode::INTERNAL, "Received RST_STREAM with error code 2")));
  EXPECT_FALSE(Retryable(Status(StatusCode::INTERNAL, "engine failed: out of memory")));
  EXPECT_FALSE(Retryable(Status(StatusCode::INVALID_ARGUMENT, "max_tokens 0: must be 1..4096")));
  EXPECT_FALSE(Retryable(Status(StatusCode::RESOURCE_EXHAUSTED, "queue full")));
  EXPECT_FALSE(Retryable(Status(StatusCode::DEADLINE_EXCEEDED, "Deadline Exceeded")));
}

}  // namespace
}  // namespace chorus::client

// Merge strategies on hand-made drafts (no model, no clock: finish times are given).
#include "chorus/agents/merge.h"

#include <gtest/gtest.h>

#include <cmath>

#include "../test_util.h"
#include "chorus/admission/answer_regex.h"
#include "chorus/agents/agent_group.h"
#include "chorus/gguf/gguf.h"

namespace chorus {
namespace {

DraftResult D(int agent, std::string text, std::vector<float> lp,
              FinishReason f = FinishReason::kEndOfText, double finish_ms = 0) {
  DraftResult d;
  d.agent = agent;
  d.text = std::move(text);
  d.logprobs = std::move(lp);
  d.num_tokens = static_cast<int>(d.logprobs.size());
  for (float x : d.logprobs) d.sum_logprob += x;
  d.finish = f;
  d.finish_ms = finish_ms;
  return d;
}

TEST(MergeTest, VotePicksThePluralityAnswer) {
  std::vector<DraftResult> d = {D(0, "so the answer is 42.", {-1, -1}),
                                D(1, "I think 41", {-0.1f, -0.1f}),
                                D(2, "The Answer is 42", {-2, -2})};
  const MergeInfo m = MergeDrafts(MergeStrategy::kVote, {}, d);
  EXPECT_EQ(m.strategy, MergeStrategy::kVote);
  EXPECT_EQ(m.votes.at("42"), 2);
  EXPECT_EQ(m.votes.at("41"), 1);
  EXPECT_EQ(m.winner, 0);  // among the "42" drafts, agent 0 has the better mean logprob
}

TEST(MergeTest, VoteTieIsBrokenByMeanLogprob) {
  std::vector<DraftResult> d = {D(0, "answer: red", {-2, -2}), D(1, "answer: blue", {-0.5f})};
  EXPECT_EQ(MergeDrafts(MergeStrategy::kVote, {}, d).winner, 1);
}

TEST(MergeTest, AnswerRegexFirstGroupAndDefaultRules) {
  auto re = CompileAnswerRegex("<([A-D])>");
  ASSERT_TRUE(re.ok() && *re != nullptr);
  EXPECT_EQ(ExtractAnswer("result=<B>", re->get()), "b");
  EXPECT_EQ(ExtractAnswer("no match here 7", re->get()), "7");  // falls back to the default
  EXPECT_EQ(ExtractAnswer("so \\boxed{x^{2}} done", nullptr), "x^{2}");
  EXPECT_EQ(ExtractAnswer("it costs 1,234.5 dollars", nullptr), "1234.5");
  EXPECT_EQ(ExtractAnswer("  Hello   World. ", nullptr), "hello world");
  EXPECT_FALSE(CompileAnswerRegex("(a").ok());
  EXPECT_EQ(*CompileAnswerRegex(""), nullptr);
}

// Issue 11, finding 6: any answer_regex up to RE2's 1 MiB was allowed and recompiled on every
// use on the engine thread. Now it is compiled once at admission, with a capped program.
TEST(MergeTest, AnswerRegexProgramSizeIsCapped) {
  EXPECT_TRUE(CompileAnswerRegex("(?i)final answer:\\s*([A-E])").ok());
  EXPECT_TRUE(CompileAnswerRegex("\\w{100}").ok());
  const auto big = CompileAnswerRegex("[a-z]{1000}");  // 1004 instructions
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("reasoning.answer_regex"), std::string::npos);
  EXPECT_NE(big.status().message().find("limit is 512"), std::string::npos) << big.status();
}

TEST(MergeTest, ConfidenceWeightsVotesAndDropsLowConfidenceDrafts) {
  ReasoningParams p;
  p.confidence_window = 2;
  // Two confident "A" drafts... versus three shaky "B" drafts, one stopped early.
  std::vector<DraftResult> d = {D(0, "answer: A", {-0.05f, -0.05f}),
                                D(1, "answer: A", {-0.1f, -0.1f}), D(2, "answer: B", {-3, -3}),
                                D(3, "answer: B", {-3, -2.5f}),
                                D(4, "answer: B", {-9, -9}, FinishReason::kLowConfidence)};
  const MergeInfo m = MergeDrafts(MergeStrategy::kConfidence, p, d);
  EXPECT_EQ(m.strategy, MergeStrategy::kConfidence);
  EXPECT_EQ(m.winner, 0);
  EXPECT_GT(m.votes.at("a"), m.votes.at("b"));
  EXPECT_NEAR(d[0].confidence, std::exp(-0.05), 1e-6);
  // A plain vote would have chosen B (3 against 2).
  EXPECT_EQ(MergeDrafts(MergeStrategy::kVote, p, d).winner, 3);
}

TEST(MergeTest, DraftsTheAnswerRegexDoesNotMatchDoNotVote) {
  auto re = CompileAnswerRegex("answer: (-?\\d+)");
  ASSERT_TRUE(re.ok());
  ReasoningParams p;
  p.answer_re = *re;
  // One draft reached its answer; three were cut by the budget mid-way, two of them on the
  // same partial line (which the default rule would read as the number 10).
  std::vector<DraftResult> d = {
      D(0, "347+85=432\n432+619=10", {-0.1f, -0.1f}, FinishReason::kBudget),
      D(1, "347+85=432\n432+619=10", {-0.1f, -0.1f}, FinishReason::kBudget),
      D(2, "347+85=432\nanswer: 1051", {-0.5f, -0.5f}),
      D(3, "347+8", {-0.2f}, FinishReason::kBudget)};
  for (MergeStrategy s : {MergeStrategy::kVote, MergeStrategy::kConfidence}) {
    const MergeInfo m = MergeDrafts(s, p, d);
    EXPECT_EQ(m.winner, 2);
    EXPECT_EQ(m.votes.size(), 1u);
  }
  // Without any match every draft votes again: the two identical cut drafts win.
  d.erase(d.begin() + 2);
  EXPECT_EQ(MergeDrafts(MergeStrategy::kVote, p, d).winner, 0);
  // CONFIDENCE: a draft that answered and was then stopped for low confidence outranks a
  // confident draft the budget cut before its answer.
  std::vector<DraftResult> c = {
      D(0, "347+85=432\n432+6", {-0.01f, -0.01f}, FinishReason::kBudget),
      D(1, "347+85=432\nanswer: 1051\n9", {-0.1f, -5.0f}, FinishReason::kLowConfidence)};
  EXPECT_EQ(MergeDrafts(MergeStrategy::kConfidence, p, c).winner, 1);
}

TEST(MergeTest, DraftConfidenceIsTheLeastConfidentWindow) {
  EXPECT_NEAR(DraftConfidence({-0.1f, -0.1f, -2, -2, -0.1f}, 2), std::exp(-2.0), 1e-6);
  EXPECT_NEAR(TailWindowMeanLogprob({-5, -1, -3}, 2), -2.0, 1e-6);
}

TEST(MergeTest, BestLogprobIsLengthNormalized) {
  std::vector<DraftResult> d = {D(0, "short", {-1.0f}), D(1, "long", {-0.5f, -0.5f, -0.5f, -0.5f})};
  EXPECT_EQ(MergeDrafts(MergeStrategy::kBestLogprob, {}, d).winner, 1);  // sum -2 but mean -0.5
}

TEST(MergeTest, FirstPrefersTheEarliestNaturalFinish) {
  std::vector<DraftResult> d = {
      D(0, "a", {-1}, FinishReason::kEndOfText, 30), D(1, "b", {-1}, FinishReason::kLength, 20),
      D(2, "c", {-0.1f}, FinishReason::kConsensus, 10), D(3, "", {}, FinishReason::kEndOfText, 5)};
  EXPECT_EQ(MergeDrafts(MergeStrategy::kFirst, {}, d).winner, 1);
}

TEST(MergeTest, SynthesizeWithoutAPassMergesAsVote) {
  std::vector<DraftResult> d = {D(0, "answer: 1", {-1}), D(1, "answer: 2", {-1}),
                                D(2, "answer: 2", {-1})};
  const MergeInfo m = MergeDrafts(MergeStrategy::kSynthesize, {}, d);
  EXPECT_EQ(m.strategy, MergeStrategy::kVote);
  EXPECT_EQ(m.winner, 1);
}

TEST(MergeTest, VoteIsDecidedWhenTheLeadCannotBeOvertaken) {
  EXPECT_TRUE(VoteIsDecided({"a", "a", "a"}, 2));
  EXPECT_FALSE(VoteIsDecided({"a", "a", "b"}, 1));
  EXPECT_FALSE(VoteIsDecided({"a", "a"}, 2));
  EXPECT_TRUE(VoteIsDecided({"a"}, 0));
}

}  // namespace
}  // namespace chorus

namespace chorus {
namespace {

// The synthesis prompt keeps the request's token ids as they were (special tokens of a chat
// template included, never decoded and re-encoded), then lists the drafts that have tokens.
TEST(SynthesisPromptTest, KeepsTheRequestTokensAndListsTheDrafts) {
  auto file = GgufFile::Open(testing::SourcePath("models/stories260K.gguf"));
  ASSERT_TRUE(file.ok()) << file.status();
  auto tok = Tokenizer::FromGguf(**file);
  ASSERT_TRUE(tok.ok()) << tok.status();
  AgentContext ctx;
  ctx.tokenizer = tok->get();
  ctx.context_length = 512;
  GenerateParams params;
  params.prompt_tokens = {1, 2, 400, 1, 2};  // BOS / EOS ids inside, as a template would put them
  params.max_tokens = 16;
  RequestGroup g(params, nullptr);
  g.agents.resize(3);
  g.agents[0].draft.text = "the cat";
  g.agents[0].draft.num_tokens = 2;
  g.agents[2].draft.text = "a dog";
  g.agents[2].draft.num_tokens = 2;
  const std::vector<int32_t> ids = SynthesisPrompt(g, ctx);
  ASSERT_GT(ids.size(), g.params.prompt_tokens.size());
  EXPECT_TRUE(
      std::equal(g.params.prompt_tokens.begin(), g.params.prompt_tokens.end(), ids.begin()));
  const std::vector<int32_t> tail(ids.begin() + g.params.prompt_tokens.size(), ids.end());
  const std::string text = (*tok)->Decode(tail, false);
  EXPECT_NE(text.find("1. the cat"), std::string::npos) << text;
  EXPECT_NE(text.find("2. a dog"), std::string::npos) << text;
  EXPECT_NE(text.find("Final answer:"), std::string::npos) << text;
  // No room for max_tokens after it, or no draft at all: no synthesis pass.
  ctx.context_length = static_cast<int>(ids.size()) + 15;
  EXPECT_TRUE(SynthesisPrompt(g, ctx).empty());
  ctx.context_length = 512;
  g.agents[0].draft.num_tokens = g.agents[2].draft.num_tokens = 0;
  EXPECT_TRUE(SynthesisPrompt(g, ctx).empty());
}

}  // namespace
}  // namespace chorus

// chorus eval: accuracy against latency and tokens, per (agents, merge) setting, over a
// GSM8K-style JSONL dataset ({"question": ..., "answer": ...} per line). The scoring is pure
// (tests drive it with a fake server); RunEval sends the requests over gRPC.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "chorus/v1/chorus.pb.h"

namespace chorus::client {

struct EvalProblem {
  std::string question;
  std::string answer;
};

// Parses the JSONL text; false with *error naming the line on a bad line. Blank lines skipped.
bool ParseDataset(const std::string& text, std::vector<EvalProblem>* out, std::string* error);

// Lowercase, trimmed, inner whitespace collapsed, a trailing period and thousands separators
// in numbers dropped ("1,024." -> "1024").
std::string NormalizeAnswer(const std::string& s);
// The answer in a model's text: the first capture group (else the whole match) of the LAST
// match of `regex` (ECMAScript), or, with no regex, the last number in the text (else the
// whole text). Normalized.
std::string ExtractAnswer(const std::string& text, const std::string& regex);

// The dataset's answer, normalized: GSM8K-style worked answers end "#### N" (N is the answer).
std::string ReferenceAnswer(const std::string& answer);

// Wilson score interval of a proportion (z = 1.96: 95%).
struct Interval {
  double lo = 0, hi = 0;
};
Interval Wilson(int successes, int n, double z = 1.96);

// One setting: `agents` fixed, or elastic (min_agents..max_agents, the server chooses).
struct EvalSetting {
  int agents = 1;
  std::string merge = "vote";  // vote | confidence | best_logprob | first | synthesize
  int min_agents = 0, max_agents = 0;
  std::string Label() const;
};

// What the server did with one problem.
struct EvalOutcome {
  bool ok = false;   // the call succeeded
  std::string text;  // the merged answer text
  int completion_tokens = 0;
  int drafts_stopped_early = 0;  // drafts that ended CONSENSUS or LOW_CONFIDENCE
  bool budget_cut = false;
  double latency_ms = 0;  // client-side, send -> response
  int agents_used = 0;    // drafts the server ran
};

struct EvalRow {
  EvalSetting setting;
  int n = 0, correct = 0, errors = 0;
  double accuracy = 0;
  Interval ci;
  double latency_mean = 0, latency_p50 = 0, latency_p99 = 0;
  double tokens_mean = 0, early_stopped_mean = 0, budget_cut_fraction = 0, agents_mean = 0;
};

// Scores one setting's outcomes (outcomes[i] answers problems[i]). Failed calls count as wrong
// (and as errors); latency and tokens are over successful calls.
EvalRow Score(const EvalSetting& s, const std::vector<EvalProblem>& problems,
              const std::vector<EvalOutcome>& outcomes, const std::string& answer_regex);

std::string FormatTable(const std::vector<EvalRow>& rows);
std::string FormatJson(const std::vector<EvalRow>& rows);
// Accuracy (with its interval) against p50 latency, one labelled point per setting.
std::string FormatSvg(const std::vector<EvalRow>& rows, const std::string& title);

// The request for one problem at one setting (`base` carries the common flags).
chorus::v1::GenerateRequest EvalRequest(const chorus::v1::GenerateRequest& base,
                                        const EvalSetting& s, const std::string& prompt);

// Runs every problem at every setting, `concurrency` at a time, through `generate`.
std::vector<EvalRow> RunEvalWith(
    const std::vector<EvalProblem>& problems, const std::vector<EvalSetting>& settings,
    const chorus::v1::GenerateRequest& base, const std::string& prompt_template,
    const std::string& answer_regex, int concurrency,
    const std::function<EvalOutcome(const chorus::v1::GenerateRequest&)>& generate);

int RunEval(int argc, char** argv);

}  // namespace chorus::client

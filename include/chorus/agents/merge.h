// Merging N drafts into one answer. Pure functions of the drafts (no clock, no engine): unit
// tested on hand-made drafts.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/core/request.h"

namespace chorus {

// The draft's answer for the vote: the first capture group of `regex` (or the whole match)
// when a regex is given and matches; else the default rule: the content of the last
// \boxed{...}, else what follows the last "answer is"/"answer:", else the last number, else
// the whole text. Always normalized (NormalizeAnswer).
std::string ExtractAnswer(std::string_view text, const re2::RE2* regex);
// Whether `text` holds an answer: the regex matches it; always true without a regex.
bool HasAnswer(std::string_view text, const re2::RE2* regex);
// Trim, lowercase ASCII, collapse whitespace runs to one space, drop a trailing period.
std::string NormalizeAnswer(std::string_view s);

// Confidence of a draft: exp(lowest mean logprob over windows of `window` tokens), i.e. the
// geometric-mean token probability of its least confident stretch. 1 for an empty draft.
double DraftConfidence(const std::vector<float>& logprobs, int window);
// Mean logprob of the last `window` tokens (the sliding window the early stop watches).
double TailWindowMeanLogprob(const std::vector<float>& logprobs, int window);

// Merges drafts (all of them; callers pass every draft, cut or not) by `strategy`.
// SYNTHESIZE is resolved by the caller (an extra pass); here it merges as VOTE.
// Drafts without tokens never win unless every draft is empty. With an answer regex, drafts
// it does not match take no part in VOTE/CONFIDENCE while any draft with tokens matches (a
// matching draft stopped for low confidence outranks a confident one without an answer).
// Fills each draft's answer and confidence.
MergeInfo MergeDrafts(MergeStrategy strategy, const ReasoningParams& params,
                      std::vector<DraftResult>& drafts);

// VOTE early stop: true when the leading answer among finished drafts can no longer be
// overtaken by the `unfinished` drafts still running.
bool VoteIsDecided(const std::vector<std::string>& finished_answers, int unfinished);

}  // namespace chorus

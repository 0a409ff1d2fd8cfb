// A request's reasoning.answer_regex, checked and compiled once at admission; the merge
// (agents/merge.h) matches drafts with the compiled object.
#pragma once

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"

namespace re2 {
class RE2;
}  // namespace re2

namespace chorus {

// Largest RE2 program (instructions) an answer_regex may compile to: matching is linear in
// the text times this, on the engine thread.
constexpr int kMaxAnswerRegexProgramSize = 512;
// An answer_regex compiled once per request (admission), or INVALID_ARGUMENT naming
// reasoning.answer_regex when it does not compile or exceeds kMaxAnswerRegexProgramSize.
// Null for an empty regex. RE2 objects are thread-safe for matching.
absl::StatusOr<std::shared_ptr<const re2::RE2>> CompileAnswerRegex(std::string_view regex);

}  // namespace chorus

#include "chorus/admission/answer_regex.h"

#include <re2/re2.h>

#include "chorus/core/str_cat.h"

namespace chorus {

absl::StatusOr<std::shared_ptr<const re2::RE2>> CompileAnswerRegex(std::string_view regex) {
  if (regex.empty()) return std::shared_ptr<const re2::RE2>();
  RE2::Options opt;
  opt.set_log_errors(false);
  opt.set_max_mem(1 << 20);
  auto re = std::make_shared<const RE2>(re2::StringPiece(regex.data(), regex.size()), opt);
  if (!re->ok()) {
    return absl::InvalidArgumentError(StrCat("reasoning.answer_regex: ", re->error()));
  }
  if (re->ProgramSize() > kMaxAnswerRegexProgramSize) {
    return absl::InvalidArgumentError(StrCat("reasoning.answer_regex: compiles to ",
                                             re->ProgramSize(), " RE2 instructions; the limit is ",
                                             kMaxAnswerRegexProgramSize));
  }
  return re;
}

}  // namespace chorus

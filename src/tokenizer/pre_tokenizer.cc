// Hand-written matchers for the byte-level BPE pre-tokenizer regexes (no regex engine has
// \p{L}/\p{N} on Debian's std::regex). Each follows its regex's alternation order and greedy
// backtracking exactly:
//   gpt-2:     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   llama-bpe: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//              ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   qwen2:     as llama-bpe with \p{N} instead of \p{N}{1,3}
#include <unicode/uchar.h>

#include "chorus/core/utf8.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {
namespace {

enum Class : uint8_t { kLetter, kNumber, kSpace, kOther };

struct Cp {
  uint32_t cp;
  Class cls;
  size_t byte;  // offset of its first byte
};

Class Classify(uint32_t cp) {
  if (cp < 0x80) {
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) return kLetter;
    if (cp >= '0' && cp <= '9') return kNumber;
    if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return kSpace;
    return kOther;
  }
  if (u_isUWhiteSpace(static_cast<UChar32>(cp))) return kSpace;
  switch (u_charType(static_cast<UChar32>(cp))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return kNumber;
    default:
      return kOther;
  }
}

class Matcher {
 public:
  explicit Matcher(std::string_view text) {
    for (size_t i = 0; i < text.size();) {
      int len;
      const uint32_t cp = DecodeUtf8(text, i, &len);
      cps_.push_back({cp, Classify(cp), i});
      i += len;
    }
    end_byte_ = text.size();
  }
  size_t size() const { return cps_.size(); }
  size_t byte(size_t i) const { return i < cps_.size() ? cps_[i].byte : end_byte_; }

  bool Is(size_t i, Class c) const { return i < cps_.size() && cps_[i].cls == c; }
  bool IsChar(size_t i, uint32_t c) const { return i < cps_.size() && cps_[i].cp == c; }
  bool IsNewline(size_t i) const { return IsChar(i, '\r') || IsChar(i, '\n'); }
  size_t Run(size_t i, Class c) const {
    while (Is(i, c)) ++i;
    return i;
  }

  // 's|'t|'re|'ve|'m|'ll|'d at i; returns the end or 0.
  size_t Contraction(size_t i, bool ignore_case) const {
    if (!IsChar(i, '\'')) return 0;
    auto lower = [&](size_t k) -> uint32_t {
      if (k >= cps_.size()) return 0;
      uint32_t c = cps_[k].cp;
      if (ignore_case && c >= 'A' && c <= 'Z') c += 32;
      return c;
    };
    const uint32_t a = lower(i + 1), b = lower(i + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    return 0;
  }

  // \s+(?!\S) then \s+ at a whitespace run starting at i.
  size_t Whitespace(size_t i) const {
    const size_t k = Run(i, kSpace);
    if (k < cps_.size() && k - i >= 2) return k - 1;  // leave the last space to the next word
    return k;
  }

  size_t NextGpt2(size_t i) const {
    if (size_t e = Contraction(i, false)) return e;
    const size_t j = IsChar(i, ' ') ? i + 1 : i;
    if (Is(j, kLetter)) return Run(j, kLetter);
    if (Is(j, kNumber)) return Run(j, kNumber);
    if (Is(j, kOther)) return Run(j, kOther);
    return Whitespace(i);
  }

  size_t NextLlama3(size_t i, size_t max_digits) const {
    if (size_t e = Contraction(i, true)) return e;
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (!Is(i, kLetter) && !Is(i, kNumber) && !IsNewline(i) && Is(i + 1, kLetter)) {
      return Run(i + 1, kLetter);
    }
    if (Is(i, kLetter)) return Run(i, kLetter);
    // \p{N}{1,max_digits}
    if (Is(i, kNumber)) {
      size_t k = i;
      while (Is(k, kNumber) && k - i < max_digits) ++k;
      return k;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    const size_t j = IsChar(i, ' ') ? i + 1 : i;
    if (Is(j, kOther)) {
      size_t k = Run(j, kOther);
      while (IsNewline(k)) ++k;
      return k;
    }
    // \s*[\r\n]+ : up to and including the last newline of the whitespace run.
    const size_t run_end = Run(i, kSpace);
    for (size_t k = run_end; k > i; --k) {
      if (IsNewline(k - 1)) return k;
    }
    return Whitespace(i);
  }

 private:
  std::vector<Cp> cps_;
  size_t end_byte_ = 0;
};

}  // namespace

std::vector<std::string_view> PreTokenize(PreTokenizer kind, std::string_view text) {
  std::vector<std::string_view> out;
  if (kind == PreTokenizer::kNone) {
    if (!text.empty()) out.push_back(text);
    return out;
  }
  Matcher m(text);
  for (size_t i = 0; i < m.size();) {
    size_t e;
    switch (kind) {
      case PreTokenizer::kGpt2:
        e = m.NextGpt2(i);
        break;
      case PreTokenizer::kLlama3:
        e = m.NextLlama3(i, 3);
        break;
      default:
        e = m.NextLlama3(i, 1);
        break;
    }
    if (e <= i) e = i + 1;  // unreachable by construction; guarantees progress
    out.push_back(text.substr(m.byte(i), m.byte(e) - m.byte(i)));
    i = e;
  }
  return out;
}

}  // namespace chorus

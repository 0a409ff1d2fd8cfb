#include "chorus/core/utf8.h"

namespace chorus {

int Utf8SequenceLength(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xc2 && b <= 0xdf) return 2;
  if (b >= 0xe0 && b <= 0xef) return 3;
  if (b >= 0xf0 && b <= 0xf4) return 4;
  return 0;
}

uint32_t DecodeUtf8(std::string_view s, size_t i, int* len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  const int n = Utf8SequenceLength(b0);
  *len = 1;
  if (n == 1) return b0;
  if (n == 0) return 0xfffd;
  uint32_t cp = b0 & (0x7f >> n);
  for (int k = 1; k < n; ++k) {
    // A cut-short sequence is one error covering its lead and continuation bytes.
    if (i + k >= s.size() || (static_cast<uint8_t>(s[i + k]) & 0xc0) != 0x80) {
      *len = k;
      return 0xfffd;
    }
    cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3f);
  }
  // Reject overlong forms, surrogates and values past U+10FFFF.
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0xfffd;
  }
  *len = n;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xc0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xe0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(static_cast<char>(0xf0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3f)));
  }
}

// True when s[i..] is a valid prefix of a UTF-8 sequence that more bytes could complete.
static bool IsIncompletePrefix(std::string_view s, size_t i) {
  const int n = Utf8SequenceLength(static_cast<uint8_t>(s[i]));
  if (n <= 1 || i + n <= s.size()) return false;
  for (size_t k = i + 1; k < s.size(); ++k) {
    if ((static_cast<uint8_t>(s[k]) & 0xc0) != 0x80) return false;
  }
  return true;
}

std::string Utf8Stream::Push(std::string_view bytes) {
  pending_.append(bytes);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    if (IsIncompletePrefix(pending_, i)) break;
    int len;
    const uint32_t cp = DecodeUtf8(pending_, i, &len);
    if (cp == 0xfffd && !(len == 3 && pending_.compare(i, 3, "\xef\xbf\xbd") == 0)) {
      out.append("\xef\xbf\xbd");
    } else {
      out.append(pending_, i, len);
    }
    i += len;
  }
  pending_.erase(0, i);
  return out;
}

std::string Utf8Stream::Flush() {
  std::string out = pending_.empty() ? "" : "\xef\xbf\xbd";
  pending_.clear();
  return out;
}

}  // namespace chorus

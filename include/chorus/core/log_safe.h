// Text from clients made safe for one log line (issue 11, finding 9: log injection): control
// characters, newlines and non-ASCII bytes become \xNN, and the result is capped in length.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace chorus {

inline std::string LogSafe(std::string_view s, size_t max_bytes = 128) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  const size_t n = s.size() < max_bytes ? s.size() : max_bytes;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  if (s.size() > max_bytes) out += "...";
  return out;
}

}  // namespace chorus

// UTF-8 helpers and the streaming detokenizer's byte buffer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chorus {

// Length of the UTF-8 sequence starting with byte b (1..4), or 0 for a continuation/invalid
// lead byte.
int Utf8SequenceLength(uint8_t b);

// Decodes the code point at s[i]. On invalid input returns U+FFFD and sets *len to the bytes of
// the invalid sequence (its lead byte plus any continuation bytes before the break).
uint32_t DecodeUtf8(std::string_view s, size_t i, int* len);
void AppendUtf8(uint32_t cp, std::string* out);

// Accepts arbitrary bytes and releases only complete, valid UTF-8: an incomplete sequence at
// the end is held back until its remaining bytes arrive; bytes that can never form a valid
// sequence become U+FFFD, so every released string is valid UTF-8. Not thread-safe.
class Utf8Stream {
 public:
  // Appends bytes and returns the text that became complete.
  std::string Push(std::string_view bytes);
  // Returns what is held back (as U+FFFD when incomplete) and resets.
  std::string Flush();

 private:
  std::string pending_;
};

}  // namespace chorus

// Stop strings over text that arrives a token at a time. Each stop string has a
// Knuth-Morris-Pratt automaton whose state an agent carries between tokens, so a token costs
// O(its new bytes) per stop string (amortized), however long the stop strings or the draft:
// the engine thread never rescans earlier text (issue 11, finding 6). Immutable after
// construction; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace chorus {

class StopMatcher {
 public:
  // Per agent: for each stop string, how many of its leading bytes end the text fed so far.
  using State = std::vector<int32_t>;

  explicit StopMatcher(std::vector<std::string> stops);

  // Feeds `bytes`, the text that follows everything fed before through `state`, which starts
  // at offset `base` of the whole text. Returns the offset (in the whole text) where the
  // earliest stop string ending inside `bytes` begins, or std::string::npos. `steps`, when
  // not null, is increased by the automaton transitions taken (the matching work).
  size_t Feed(State& state, std::string_view bytes, size_t base, int64_t* steps = nullptr) const;

  // Longest stop string in bytes (what streaming must hold back, minus one).
  size_t max_length() const { return max_length_; }

 private:
  std::vector<std::string> stops_;
  std::vector<std::vector<int32_t>> fail_;  // fail_[s][i]: longest proper border of stop[0..i]
  size_t max_length_ = 0;
};

}  // namespace chorus

// Stop strings fed a token at a time: same hits as searching the whole text, across token
// boundaries and overlapping stops, with work linear in the bytes fed (issue 11, finding 6).
#include "chorus/agents/stop_matcher.h"

#include <gtest/gtest.h>

#include <random>

namespace chorus {
namespace {

constexpr size_t kNone = std::string::npos;

class Fed {
 public:
  explicit Fed(std::vector<std::string> stops) : m_(std::move(stops)) {}
  size_t Feed(std::string_view piece) {
    const size_t base = text_.size();
    text_ += piece;
    return m_.Feed(state_, piece, base, &steps_);
  }
  const std::string& text() const { return text_; }
  int64_t steps() const { return steps_; }

 private:
  StopMatcher m_;
  StopMatcher::State state_;
  std::string text_;
  int64_t steps_ = 0;
};

TEST(StopMatcherTest, FindsStopsAcrossTokenBoundaries) {
  Fed f({"END", "\n\n"});
  EXPECT_EQ(f.Feed("The E"), kNone);
  EXPECT_EQ(f.Feed("N"), kNone);
  EXPECT_EQ(f.Feed("D."), 4u);  // began two tokens ago
  Fed g({"END", "\n\n"});
  EXPECT_EQ(g.Feed("a\n"), kNone);
  EXPECT_EQ(g.Feed("\nb"), 1u);
}

TEST(StopMatcherTest, TheEarliestStartWinsAmongOverlappingStops) {
  Fed f({"bc", "abcd"});
  EXPECT_EQ(f.Feed("xabcd"), 1u);  // "abcd" starts before "bc"
  Fed g({"bc", "abcd"});
  EXPECT_EQ(g.Feed("xab"), kNone);
  EXPECT_EQ(g.Feed("c"), 2u);  // "bc" is complete first; "abcd" is not there yet
}

// Against the plain search of the whole text after every token.
TEST(StopMatcherTest, AgreesWithSearchingTheWholeText) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::vector<std::string> stops;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      std::string s;
      for (int k = 1 + static_cast<int>(rng() % 5); k > 0; --k) s.push_back("ab"[rng() % 2]);
      stops.push_back(s);
    }
    Fed f(stops);
    for (int token = 0; token < 40; ++token) {
      std::string piece;
      for (int k = 1 + static_cast<int>(rng() % 3); k > 0; --k) piece.push_back("abc"[rng() % 3]);
      const size_t got = f.Feed(piece);
      size_t want = kNone;
      for (const auto& s : stops) want = std::min(want, f.text().find(s));
      ASSERT_EQ(got, want) << "trial " << trial << " text '" << f.text() << "'";
      if (got != kNone) break;
    }
  }
}

// Stop strings built to make a rescan expensive: 255 'a's then one other byte. The old search
// re-read max_stop bytes per stop string at every token; the automaton does at most two
// transitions per byte and stop string, however long the draft gets.
TEST(StopMatcherTest, MatchingWorkIsLinearInTheBytesFed) {
  std::vector<std::string> stops;
  for (int i = 0; i < 8; ++i) stops.push_back(std::string(255, 'a') + static_cast<char>('b' + i));
  Fed f(stops);
  for (int i = 0; i < 20000; ++i) ASSERT_EQ(f.Feed("a"), kNone);
  EXPECT_LE(f.steps(), 2 * 20000 * 8);
  EXPECT_EQ(f.Feed("d"), 20000u - 255u);  // and the stop is still found
}

}  // namespace
}  // namespace chorus

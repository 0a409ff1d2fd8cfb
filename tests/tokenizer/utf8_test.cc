#include "chorus/core/utf8.h"

#include <gtest/gtest.h>

namespace chorus {
namespace {

TEST(Utf8StreamTest, HoldsBackIncompleteSequences) {
  Utf8Stream s;
  const std::string euro = "\xe2\x82\xac";
  EXPECT_EQ(s.Push(euro.substr(0, 1)), "");
  EXPECT_EQ(s.Push(euro.substr(1, 1)), "");
  EXPECT_EQ(s.Push(euro.substr(2, 1) + "a"), euro + "a");
  EXPECT_EQ(s.Flush(), "");
}

TEST(Utf8StreamTest, InvalidBytesBecomeReplacementCharacter) {
  Utf8Stream s;
  EXPECT_EQ(s.Push("a\xff"
                   "b"),
            "a\xef\xbf\xbd"
            "b");
  EXPECT_EQ(s.Push("\xe2\x82"), "");
  EXPECT_EQ(s.Push("x"), "\xef\xbf\xbdx");  // a lead byte cut short by ASCII
  EXPECT_EQ(s.Push("\xf0\x9f"), "");
  EXPECT_EQ(s.Flush(), "\xef\xbf\xbd");
}

TEST(Utf8StreamTest, EveryByteSplitOfValidTextRoundTrips) {
  const std::string text = "h\xc3\xa9llo \xe4\xb8\xad \xf0\x9f\xa6\x99!";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    Utf8Stream s;
    std::string out = s.Push(text.substr(0, cut));
    out += s.Push(text.substr(cut));
    out += s.Flush();
    EXPECT_EQ(out, text) << cut;
  }
}

TEST(Utf8Test, RejectsOverlongAndSurrogates) {
  int len;
  EXPECT_EQ(DecodeUtf8("\xe0\x80\x80", 0, &len), 0xfffdu);
  EXPECT_EQ(len, 1);
  EXPECT_EQ(DecodeUtf8("\xed\xa0\x80", 0, &len), 0xfffdu);
  EXPECT_EQ(DecodeUtf8("\xf0\x9f\xa6\x99", 0, &len), 0x1f999u);
  EXPECT_EQ(len, 4);
}

}  // namespace
}  // namespace chorus

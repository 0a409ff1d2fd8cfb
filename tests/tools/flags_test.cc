// tools::Flags (CLI11 underneath): the forms the tools accept, the last value winning, and the
// one-line errors for unknown flags, missing values and out-of-range numbers.
#include "../../src/tools/flags.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace chorus::tools {
namespace {

// argv from words (argv[0] is the program).
struct Argv {
  explicit Argv(std::vector<std::string> words) : words_(std::move(words)) {
    words_.insert(words_.begin(), "prog");
    for (auto& w : words_) ptrs_.push_back(w.data());
  }
  int argc() const { return static_cast<int>(ptrs_.size()); }
  char** argv() { return ptrs_.data(); }

 private:
  std::vector<std::string> words_;
  std::vector<char*> ptrs_;
};

TEST(FlagsTest, ValuesSwitchesAndBothSpellings) {
  Flags f({"model", "threads"}, {"json", "help"});
  Argv a({"--model", "m.gguf", "--threads=3", "--json"});
  std::string error;
  ASSERT_TRUE(f.Parse(a.argc(), a.argv(), &error)) << error;
  EXPECT_EQ(f.Get("model"), "m.gguf");
  int threads = 0;
  ASSERT_TRUE(f.GetNumber("threads", 1, 1, 8, &threads, &error)) << error;
  EXPECT_EQ(threads, 3);
  EXPECT_TRUE(f.Has("json"));
  EXPECT_FALSE(f.Has("help"));
  EXPECT_EQ(f.Get("missing", "default"), "default");
}

TEST(FlagsTest, TheLastValueWins) {
  Flags f({"seed"}, {});
  Argv a({"--seed", "1", "--seed", "2"});
  std::string error;
  ASSERT_TRUE(f.Parse(a.argc(), a.argv(), &error)) << error;
  EXPECT_EQ(f.Get("seed"), "2");
}

TEST(FlagsTest, PositionalArgumentsOnlyWhenAllowed) {
  std::string error;
  Flags strict({"agents"}, {});
  Argv a({"a prompt", "--agents", "4"});
  EXPECT_FALSE(strict.Parse(a.argc(), a.argv(), &error));
  EXPECT_NE(error.find("a prompt"), std::string::npos) << error;

  Flags loose({"agents"}, {});
  loose.AllowPositional();
  Argv b({"a prompt", "--agents", "4"});
  ASSERT_TRUE(loose.Parse(b.argc(), b.argv(), &error)) << error;
  ASSERT_EQ(loose.positional().size(), 1u);
  EXPECT_EQ(loose.positional()[0], "a prompt");
  EXPECT_EQ(loose.Get("agents"), "4");
}

TEST(FlagsTest, ErrorsAreOneLineAndNameTheFlag) {
  std::string error;
  Flags f({"model", "threads"}, {"json"});
  Argv unknown({"--bogus", "1"});
  EXPECT_FALSE(f.Parse(unknown.argc(), unknown.argv(), &error));
  EXPECT_NE(error.find("--bogus"), std::string::npos) << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;

  Flags g({"model"}, {});
  Argv missing({"--model"});
  EXPECT_FALSE(g.Parse(missing.argc(), missing.argv(), &error));
  EXPECT_NE(error.find("model"), std::string::npos) << error;

  Flags h({"threads"}, {});
  Argv range({"--threads", "999"});
  ASSERT_TRUE(h.Parse(range.argc(), range.argv(), &error)) << error;
  int threads = 0;
  EXPECT_FALSE(h.GetNumber("threads", 1, 1, 256, &threads, &error));
  EXPECT_EQ(error, "--threads must be a number in [1, 256], got '999'");
}

TEST(FlagsTest, SwitchesTakeNoValue) {
  std::string error;
  Flags f({}, {"json"});
  Argv a({"--json=false"});
  EXPECT_FALSE(f.Parse(a.argc(), a.argv(), &error));  // never a silent "on"
  EXPECT_NE(error.find("json"), std::string::npos) << error;
}

TEST(FlagsTest, AnEmptyInlineValueIsEmptyAndTakesNothingElse) {
  std::string error;
  Flags f({"metrics", "http"}, {});
  Argv a({"--metrics=", "--http", "127.0.0.1:8080"});
  ASSERT_TRUE(f.Parse(a.argc(), a.argv(), &error)) << error;
  EXPECT_TRUE(f.Has("metrics"));
  EXPECT_EQ(f.Get("metrics", "default"), "");
  EXPECT_EQ(f.Get("http"), "127.0.0.1:8080");
}

TEST(FlagsTest, APositionalThatStartsWithADashGoesAfterTheSeparator) {
  std::string error;
  Flags f({"agents"}, {});
  f.AllowPositional();
  Argv a({"--agents", "2", "--", "-x marks the spot"});
  ASSERT_TRUE(f.Parse(a.argc(), a.argv(), &error)) << error;
  ASSERT_EQ(f.positional().size(), 1u);
  EXPECT_EQ(f.positional()[0], "-x marks the spot");
}

}  // namespace
}  // namespace chorus::tools

// chorus-run and chorus-mkmodel as users run them: spawned processes, stdout and exit codes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>

#include "../test_util.h"

namespace chorus {
namespace {

struct Result {
  int exit_code;
  std::string out;
};

Result Shell(const std::string& cmd) {
  Result r{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

std::string RunBin() { return testing::BinaryPath("src/tools/chorus-run"); }
std::string Stories() { return testing::SourcePath("models/stories260K.gguf"); }

TEST(ChorusRunTest, ReproducesThePublishedStories260KGreedyText) {
  const Result r = Shell(RunBin() + " --model " + Stories() +
                         " --prompt '' --max-tokens 256 --temperature 0 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, std::string(testing::kPublishedGreedy) + "\n");  // plus the final newline
}

TEST(ChorusRunTest, SameSeedSameTextDifferentSeedDifferentText) {
  const std::string base = RunBin() + " --model " + Stories() +
                           " --prompt 'Once upon a time' --max-tokens 40 --temperature 1 "
                           "--top-p 0.9 2>/dev/null --seed ";
  const Result a = Shell(base + "7"), b = Shell(base + "7"), c = Shell(base + "8");
  EXPECT_EQ(a.exit_code, 0);
  EXPECT_FALSE(a.out.empty());
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(ChorusRunTest, TokenizeReadsStdinVerbatim) {
  // run.c rules: dummy prefix, "Hello" -> pieces of the 512-token vocabulary; a trailing newline
  // is part of the input (no stripping), so the two outputs differ.
  const Result a = Shell("printf 'Lily' | " + RunBin() + " --model " + Stories() + " --tokenize");
  const Result b =
      Shell("printf 'Lily\\n' | " + RunBin() + " --model " + Stories() + " --tokenize");
  EXPECT_EQ(a.exit_code, 0);
  EXPECT_FALSE(a.out.empty());
  EXPECT_NE(a.out, b.out);
  EXPECT_EQ(b.out.rfind(" 13\n"), b.out.size() - 4);  // '\n' is byte 0x0A -> id 10 + 3
}

TEST(ChorusRunTest, TokenizeWorksOnVocabularyOnlyFiles) {
  const std::string vocab = testing::SharedPath("tokenizers/gpt-2.gguf");
  if (!testing::Exists(vocab)) GTEST_SKIP() << "shared fixtures absent";
  const Result r =
      Shell("printf 'Hello world' | " + RunBin() + " --model " + vocab + " --tokenize");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, "15496 995\n");  // GPT-2's ids for "Hello", " world"
}

TEST(ChorusRunTest, BadInputsExitNonZeroWithOneLine) {
  const std::string junk = testing::TempPath("junk.gguf");
  {
    FILE* f = std::fopen(junk.c_str(), "wb");
    std::fputs("GGUF but not really", f);
    std::fclose(f);
  }
  for (const std::string& args :
       {" --model " + junk + " --prompt hi", std::string(" --model /nonexistent.gguf --prompt hi"),
        " --model " + Stories() + " --prompt hi --max-tokens -3",
        " --model " + Stories() + " --prompt hi --temperature abc",
        " --model " + Stories() + " --prompt hi --bogus 1",
        " --model " + Stories() + " --prompt hi --max-tokens 5000", std::string(" --prompt hi")}) {
    const Result r = Shell(RunBin() + args + " 2>&1 >/dev/null");
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_EQ(r.out.find("chorus-run: "), 0u) << args << ": " << r.out;
    EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << args << ": " << r.out;
  }
  std::remove(junk.c_str());
}

TEST(ChorusMkmodelTest, WritesDeterministicModelsThatRun) {
  const std::string a = testing::TempPath("a.gguf"), b = testing::TempPath("b.gguf");
  const std::string mk = testing::BinaryPath("src/tools/chorus-mkmodel") +
                         " --arch qwen2 --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 64"
                         " --type q8_0 --seed 5 --vocab-from " +
                         Stories() + " --out ";
  ASSERT_EQ(Shell(mk + a).exit_code, 0);
  ASSERT_EQ(Shell(mk + b).exit_code, 0);
  EXPECT_EQ(testing::ReadFile(a), testing::ReadFile(b));
  const Result r = Shell(RunBin() + " --model " + a +
                         " --prompt 'Once' --max-tokens 8 --temperature 0 2>/dev/null");
  EXPECT_EQ(r.exit_code, 0);
  std::remove(a.c_str());
  std::remove(b.c_str());
}

}  // namespace
}  // namespace chorus

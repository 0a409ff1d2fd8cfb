// The `chorus` client against a spawned chorusd on 127.0.0.1: generate, stream, health, stats,
// and a short bench whose JSON adds up and agrees with the server's counters.
#include <gtest/gtest.h>

#include <regex>

#include "../server/daemon.h"

namespace chorus {
namespace {

struct Out {
  int code;
  std::string text;
};

Out Sh(const std::string& cmd) {
  Out o{-1, ""};
  FILE* p = ::popen(cmd.c_str(), "r");
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), p)) > 0) o.text.append(buf, n);
  const int st = ::pclose(p);
  o.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return o;
}

double Num(const std::string& json, const std::string& path) {
  // path "a" or "a.b": the number after "a": { ... "b": (good enough for our own output).
  size_t at = 0;
  size_t dot;
  std::string rest = path;
  while ((dot = rest.find('.')) != std::string::npos) {
    at = json.find("\"" + rest.substr(0, dot) + "\"", at);
    rest = rest.substr(dot + 1);
  }
  at = json.find("\"" + rest + "\":", at);
  EXPECT_NE(at, std::string::npos) << path;
  return std::stod(json.substr(json.find(':', at) + 1));
}

class ClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    d_ = testing::Spawn({});
    ASSERT_GT(d_.port, 0);
    cli_ = testing::BinaryPath("src/chorus") + " --addr 127.0.0.1:" + std::to_string(d_.port);
  }
  void TearDown() override { testing::StopDaemon(d_); }
  std::string Cmd(const std::string& sub, const std::string& args) {
    // Subcommand first, then --addr.
    return testing::BinaryPath("src/chorus") + " " + sub +
           " --addr 127.0.0.1:" + std::to_string(d_.port) + " " + args;
  }
  testing::Daemon d_;
  std::string cli_;
};

TEST_F(ClientTest, GenerateStreamHealthAndStats) {
  const Out g = Sh(Cmd("generate", "'' --temperature 0 --max-tokens 12"));
  EXPECT_EQ(g.code, 0);
  // The published stories260K greedy text begins this way (12 tokens).
  EXPECT_EQ(g.text, "Once upon a time, there was a little girl\n");
  const Out s = Sh(Cmd("stream", "'' --temperature 0 --max-tokens 12"));
  EXPECT_EQ(s.code, 0);
  EXPECT_EQ(s.text, g.text);
  const Out d =
      Sh(Cmd("generate", "'Once upon a time' --agents 3 --drafts --max-tokens 8 --seed 4"));
  EXPECT_EQ(d.code, 0);
  EXPECT_NE(d.text.find("--- draft 2"), std::string::npos);
  EXPECT_NE(d.text.find("--- vote (VOTE)"), std::string::npos);
  const Out j = Sh(Cmd("generate", "'Once' --json --max-tokens 4"));
  EXPECT_NE(j.text.find("\"usage\""), std::string::npos);
  EXPECT_EQ(Sh(Cmd("health", "")).code, 0);
  EXPECT_NE(Sh(Cmd("stats", "")).text.find("kv_blocks_total"), std::string::npos);
  // Bad flags and an unreachable server fail with a non-zero status.
  EXPECT_NE(Sh(Cmd("generate", "x --agents zero 2>/dev/null")).code, 0);
  EXPECT_NE(Sh(testing::BinaryPath("src/chorus") + " health --addr 127.0.0.1:1 2>/dev/null").code,
            0);
}

TEST_F(ClientTest, BenchJsonAddsUpAndMatchesTheServerCounters) {
  const std::string json_path = testing::TempPath("bench.json");
  const Out b = Sh(Cmd("bench",
                       "--concurrency 8 --requests 80 --agents 2 --max-tokens 48 "
                       "--cancel-rate 0.3 --cancel-delay-max-ms 20 --warmup 4 --json " +
                           json_path + " 2>/dev/null"));
  EXPECT_EQ(b.code, 0) << b.text;
  const std::string j = testing::ReadFile(json_path);
  const double sent = Num(j, "sent"), completed = Num(j, "completed"),
               cancelled = Num(j, "cancelled"), failed = Num(j, "failed");
  EXPECT_EQ(sent, 80);
  EXPECT_EQ(sent, completed + failed + cancelled);
  EXPECT_EQ(failed, 0);
  EXPECT_NEAR(cancelled / sent, 0.3, 0.15);
  for (const char* m : {"e2e_ms", "ttft_ms"}) {
    const std::string k(m);
    EXPECT_LE(Num(j, k + ".p50"), Num(j, k + ".p90"));
    EXPECT_LE(Num(j, k + ".p90"), Num(j, k + ".p99"));
    EXPECT_LE(Num(j, k + ".p99"), Num(j, k + ".max"));
  }
  // The server counted the same requests (warmup included on its side), with two races that
  // only go one way: a cancel that crosses the server's reply counts as completed there and
  // cancelled here, and a cancel before the call reaches the server is not counted there.
  const double s_completed = Num(j, "server.requests_completed");
  const double s_cancelled = Num(j, "server.requests_cancelled");
  const double s_total = s_completed + s_cancelled + Num(j, "server.requests_failed");
  EXPECT_LE(s_total, sent + 4);
  EXPECT_GE(s_total, sent + 4 - cancelled);
  EXPECT_GE(s_completed, completed + 4);
  EXPECT_LE(s_cancelled, cancelled);
  std::remove(json_path.c_str());
}

}  // namespace
}  // namespace chorus

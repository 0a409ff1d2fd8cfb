// chorus bench: the command line, the prompts and the --http connection.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "bench_internal.h"

namespace chorus::client::bench {
namespace {

constexpr char kBenchUsage[] =
    "usage: chorus bench [--addr HOST:PORT] (--concurrency C | --rate R [--burstiness K])\n"
    "  (--requests N | --duration S) [--warmup N] [--prompts FILE.jsonl |\n"
    "  --prompt-tokens MEAN --prompt-tokens-stddev SD] [--agents N | --min-agents A "
    "--max-agents B]\n"
    "  [--merge S] [--budget-ms MS]\n"
    "  [--max-tokens N] [--temperature T] [--cancel-rate F] [--cancel-delay-max-ms MS]\n"
    "  [--timeout-ms MS] [--slo-ttft-ms MS] [--slo-e2e-ms MS] [--seed S] [--json FILE]\n"
    "  [--http http://HOST:PORT]  the same load through the OpenAI-compatible HTTP API\n"
    "  [--retries N]  retry a call that failed UNAVAILABLE, was reset by the other side or lost "
    "its connection (backoff)\n"
    "Closed loop with --concurrency (default 4); open loop with --rate (Poisson arrivals, or\n"
    "gamma inter-arrivals of shape --burstiness: < 1 burstier, 1 Poisson). Bounded by\n"
    "--requests (default 100) or --duration seconds; SIGINT/SIGTERM stop it early with the "
    "report.\n";

// The numeric flags, the request flags (BuildRequest), --timeout-ms and --retries.
bool ReadNumbers(const tools::Flags& f, BenchConfig* cfg, std::string* error) {
  if (!f.GetNumber("concurrency", 4, 1, 4096, &cfg->concurrency, error) ||
      !f.GetNumber("requests", 100, 1, 10000000, &cfg->requests, error) ||
      !f.GetNumber("warmup", 0, 0, 100000, &cfg->warmup, error) ||
      !f.GetNumber("prompt-tokens", 32, 1, 1 << 20, &cfg->prompt_tokens, error) ||
      !f.GetNumber("prompt-tokens-stddev", 0, 0, 1 << 20, &cfg->prompt_tokens_stddev, error) ||
      !f.GetNumber("rate", 0.0, 0.0, 1e6, &cfg->rate, error) ||
      !f.GetNumber("burstiness", 1.0, 0.01, 100.0, &cfg->burstiness, error) ||
      !f.GetNumber("duration", 0.0, 0.0, 86400.0, &cfg->duration_s, error) ||
      !f.GetNumber("cancel-rate", 0.0, 0.0, 1.0, &cfg->cancel_rate, error) ||
      !f.GetNumber("cancel-delay-max-ms", 500.0, 0.0, 1e7, &cfg->cancel_delay_max_ms, error) ||
      !f.GetNumber("slo-ttft-ms", 1e18, 0.0, 1e18, &cfg->slo_ttft_ms, error) ||
      !f.GetNumber("slo-e2e-ms", 1e18, 0.0, 1e18, &cfg->slo_e2e_ms, error) ||
      !f.GetNumber<int64_t>("seed", 1, 0, INT64_MAX, &cfg->seed, error)) {
    return false;
  }
  if (!BuildRequest(f, "", &cfg->base, error)) return false;
  std::string ignored;  // a bad --timeout-ms means no timeout
  (void)f.GetNumber<int64_t>("timeout-ms", 0, 0, int64_t{1} << 40, &cfg->timeout_ms, &ignored);
  return f.GetNumber("retries", 0, 0, 100, &cfg->retries, error);
}

std::vector<std::string> SyntheticPrompts(const BenchConfig& cfg, std::mt19937_64* rng) {
  static const char* kWords[] = {"the", "cat",  "sat", "on",  "a",   "big", "red", "mat",
                                 "and", "then", "she", "saw", "dog", "run", "to",  "park"};
  const int ptok = cfg.prompt_tokens, ptok_sd = cfg.prompt_tokens_stddev;
  std::vector<std::string> prompts;
  std::normal_distribution<double> len(ptok, ptok_sd);
  for (int i = 0; i < 64; ++i) {
    const int n = std::max(1, static_cast<int>(std::lround(ptok_sd > 0 ? len(*rng) : ptok)));
    std::string p;
    for (int w = 0; w < n; ++w) p += std::string(w ? " " : "") + kWords[(*rng)() % 16];
    prompts.push_back(p);
  }
  return prompts;
}

}  // namespace

tools::Flags BenchFlags() {
  auto names = RequestFlags();
  for (const char* n : {"concurrency", "rate", "burstiness", "requests", "duration", "warmup",
                        "prompts", "prompt-tokens", "prompt-tokens-stddev", "cancel-rate",
                        "cancel-delay-max-ms", "slo-ttft-ms", "slo-e2e-ms", "json", "http"}) {
    names.insert(n);
  }
  return tools::Flags(names, {"help", "tls"});
}

int ParseBenchCommandLine(int argc, char** argv, tools::Flags* flags, BenchConfig* cfg) {
  std::string error;
  if (!flags->Parse(argc, argv, &error)) {
    std::fprintf(stderr, "chorus bench: %s (see --help)\n", error.c_str());
    return 2;
  }
  if (flags->Has("help")) {
    std::fputs(kBenchUsage, stdout);
    return 0;
  }
  if (!ReadNumbers(*flags, cfg, &error)) {
    std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
    return 2;
  }
  cfg->has_prompts = flags->Has("prompts");
  cfg->prompts_path = flags->Get("prompts");
  cfg->has_json = flags->Has("json");
  cfg->json_path = flags->Get("json");
  cfg->use_http = flags->Has("http");
  cfg->http_url = flags->Get("http");
  return -1;
}

bool ParsePrompts(std::istream& in, const std::string& source, std::vector<std::string>* out,
                  std::string* error) {
  std::string line;
  int no = 0;
  while (std::getline(in, line)) {
    ++no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const auto prompt = j.is_object() ? j.find("prompt") : j.end();
    if (j.is_discarded() || !j.is_object() || prompt == j.end() || !prompt->is_string()) {
      *error = source + ":" + std::to_string(no) + ": expected a JSON object with a string " +
               "\"prompt\" ({\"prompt\": \"...\"})";
      return false;
    }
    out->push_back(prompt->get<std::string>());
  }
  if (out->empty()) {
    *error = "no {\"prompt\": ...} lines in " + source;
    return false;
  }
  return true;
}

bool LoadPrompts(const BenchConfig& cfg, std::mt19937_64* rng, std::vector<std::string>* out,
                 std::string* error) {
  if (!cfg.has_prompts) {
    *out = SyntheticPrompts(cfg, rng);
    return true;
  }
  std::ifstream in(cfg.prompts_path);
  if (!in) {
    *error = "cannot read " + cfg.prompts_path;
    return false;
  }
  return ParsePrompts(in, cfg.prompts_path, out, error);
}

bool ConnectHttp(const BenchConfig& cfg, const Connection& conn, HttpTarget* out,
                 std::string* error) {
  if (!cfg.use_http) return true;
  if (cfg.cancel_rate > 0) {
    *error = "--cancel-rate is gRPC only";
    return false;
  }
  return HttpBenchConnect(cfg.http_url, conn.auth, out, error);
}

}  // namespace chorus::client::bench

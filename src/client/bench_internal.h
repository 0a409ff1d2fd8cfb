// chorus bench internals shared by bench.cc (the load loop), bench_setup.cc (flags and prompts)
// and bench_report.cc (aggregation, the table, the JSON file). Not part of the client's API.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <istream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "chorus/core/mutex.h"
#include "client.h"

namespace chorus::client::bench {

using Clock = std::chrono::steady_clock;
inline double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// One request as the client saw it (all times in ms; ttft_ms -1 before the first token).
struct Record {
  int index = 0;
  double start_ms = 0, ttft_ms = -1, e2e_ms = 0;
  int output_tokens = 0, agents_finished = 0, retries = 0, agents_used = 0;
  int code = 0;
  std::string error;  // the final status message of a failed request
  bool cancelled_by_us = false, budget_cut = false, warmup = false;
  std::vector<double> itl_ms;
};

// Records by request index, allocated in chunks on first use: a --duration run bounded by a
// huge --requests must not allocate (and zero) a record for every request it might send.
class RecordStore {
 public:
  explicit RecordStore(int total) : chunks_((static_cast<size_t>(total) + kChunk - 1) / kChunk) {}
  Record& operator[](int i) {
    Record* records = nullptr;
    {
      MutexLock lock(&mu_);
      auto& chunk = chunks_[static_cast<size_t>(i) / kChunk];
      if (!chunk) chunk = std::make_unique<Record[]>(kChunk);
      records = chunk.get();
    }
    return records[static_cast<size_t>(i) % kChunk];
  }

 private:
  static constexpr size_t kChunk = 4096;
  Mutex mu_;
  std::vector<std::unique_ptr<Record[]>> chunks_ ABSL_GUARDED_BY(mu_);
};

// The command line of chorus bench.
struct BenchConfig {
  int concurrency = 4, requests = 100, warmup = 0;
  int prompt_tokens = 32, prompt_tokens_stddev = 0;
  double rate = 0, burstiness = 1, duration_s = 0;
  double cancel_rate = 0, cancel_delay_max_ms = 500;
  double slo_ttft_ms = 1e18, slo_e2e_ms = 1e18;  // 1e18: no SLO
  int64_t seed = 1;
  int64_t timeout_ms = 0;
  int retries = 0;
  bool has_prompts = false, has_json = false, use_http = false;
  std::string prompts_path, json_path, http_url;
  chorus::v1::GenerateRequest base;  // the common request flags
};

// The flags chorus bench accepts.
tools::Flags BenchFlags();
// Parses the command line into *flags and *cfg. Returns -1 to go on, else the exit status
// (0 after --help, 2 after an error, which it prints).
int ParseBenchCommandLine(int argc, char** argv, tools::Flags* flags, BenchConfig* cfg);

// JSONL {"prompt": "..."} lines (blank lines skipped). False with *error naming `source` and the
// line of a bad line, or saying there were no prompts.
bool ParsePrompts(std::istream& in, const std::string& source, std::vector<std::string>* out,
                  std::string* error);
// --prompts FILE, else 64 synthetic prompts of about --prompt-tokens words drawn from *rng.
bool LoadPrompts(const BenchConfig& cfg, std::mt19937_64* rng, std::vector<std::string>* out,
                 std::string* error);
// --http: checks the flags that go with it and connects (GET /v1/models). True without --http.
bool ConnectHttp(const BenchConfig& cfg, const Connection& conn, HttpTarget* out,
                 std::string* error);

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
  int count = 0;
};
Percentiles Summarize(std::vector<double> v);

// The server's counters over the run (GetStats after - before).
struct ServerDelta {
  int64_t requests_completed = 0, requests_cancelled = 0, requests_failed = 0;
  int64_t tokens_generated = 0, steps_run = 0;
};

// Aggregates over the measured (non-warmup) requests that were sent.
struct BenchReport {
  double wall_s = 0;
  int measured = 0, completed = 0, cancelled = 0, failures = 0;
  int good = 0, cut = 0, retried = 0;
  int64_t agents_sum = 0, out_tokens = 0;
  double agents_mean = 0, budget_cut_fraction = 0;
  Percentiles ttft, itl, tpot, e2e;
  std::map<int, int> by_code;                   // status code -> requests
  std::map<std::string, int> failure_messages;  // "code: message" -> requests (first 5 kinds)
};

BenchReport Aggregate(const BenchConfig& cfg, RecordStore& records, int sent, double wall_s);
// The summary table on stdout.
void PrintReport(const BenchConfig& cfg, const BenchReport& report,
                 const std::optional<ServerDelta>& server);
// --json FILE: the summary and every sent request.
void WriteJson(const BenchConfig& cfg, const BenchReport& report,
               const std::optional<ServerDelta>& server, RecordStore& records, int sent);

}  // namespace chorus::client::bench

// chorus bench: load generator for chorusd. Every request is a GenerateStream call so that TTFT
// and inter-token latency are measured client-side.
//
// Definitions (all client-side, milliseconds):
//   ttft      send -> first token delta of any agent
//   itl       time between consecutive deltas of one agent's stream (every gap, all agents)
//   tpot      (e2e - ttft) / (output tokens of the request - 1), output tokens = all agents
//   e2e       send -> final status
//   goodput   completed requests meeting --slo-ttft-ms and --slo-e2e-ms, per second
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "client.h"

namespace chorus::client {
namespace pb = chorus::v1;
namespace {

using Clock = std::chrono::steady_clock;
double Ms(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Record {
  int index = 0;
  double start_ms = 0, ttft_ms = -1, e2e_ms = 0;
  int output_tokens = 0, agents_finished = 0, retries = 0, agents_used = 0;
  int code = 0;
  bool cancelled_by_us = false, budget_cut = false, warmup = false;
  std::vector<double> itl_ms;
};

// Records by request index, allocated in chunks on first use: a --duration run bounded by a
// huge --requests must not allocate (and zero) a record for every request it might send.
class RecordStore {
 public:
  explicit RecordStore(int total) : chunks_((static_cast<size_t>(total) + kChunk - 1) / kChunk) {}
  Record& operator[](int i) {
    auto& chunk = chunks_[static_cast<size_t>(i) / kChunk];
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!chunk) chunk = std::make_unique<Record[]>(kChunk);
    }
    return chunk[static_cast<size_t>(i) % kChunk];
  }

 private:
  static constexpr size_t kChunk = 4096;
  std::mutex mu_;
  std::vector<std::unique_ptr<Record[]>> chunks_;
};

// SIGINT/SIGTERM end a bench like --duration does: no new calls, in-flight calls finish, the
// report and the JSON are written.
std::atomic<bool> g_stop_requested{false};  // lock-free: safe in a signal handler
static_assert(std::atomic<bool>::is_always_lock_free);
void StopBench(int) { g_stop_requested.store(true); }

struct Percentiles {
  double mean = 0, p50 = 0, p90 = 0, p99 = 0, max = 0;
  int count = 0;
};
Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))]; };
  double sum = 0;
  for (double x : v) sum += x;
  p.mean = sum / v.size();
  p.p50 = at(0.5);
  p.p90 = at(0.9);
  p.p99 = at(0.99);
  p.max = v.back();
  p.count = static_cast<int>(v.size());
  return p;
}
std::string Json(const Percentiles& p) {
  std::ostringstream o;
  o << "{\"count\": " << p.count << ", \"mean\": " << p.mean << ", \"p50\": " << p.p50
    << ", \"p90\": " << p.p90 << ", \"p99\": " << p.p99 << ", \"max\": " << p.max << "}";
  return o.str();
}
std::string Escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) { o += ' '; continue; }
    o += c;
  }
  return o;
}

constexpr char kBenchUsage[] =
    "usage: chorus bench [--addr HOST:PORT] (--concurrency C | --rate R [--burstiness K])\n"
    "  (--requests N | --duration S) [--warmup N] [--prompts FILE.jsonl |\n"
    "  --prompt-tokens MEAN --prompt-tokens-stddev SD] [--agents N | --min-agents A --max-agents B]\n"
    "  [--merge S] [--budget-ms MS]\n"
    "  [--max-tokens N] [--temperature T] [--cancel-rate F] [--cancel-delay-max-ms MS]\n"
    "  [--timeout-ms MS] [--slo-ttft-ms MS] [--slo-e2e-ms MS] [--seed S] [--json FILE]\n"
    "  [--http http://HOST:PORT]  the same load through the OpenAI-compatible HTTP API\n"
    "  [--retries N]  retry a call that failed UNAVAILABLE or lost its connection (backoff)\n"
    "Closed loop with --concurrency (default 4); open loop with --rate (Poisson arrivals, or\n"
    "gamma inter-arrivals of shape --burstiness: < 1 burstier, 1 Poisson). Bounded by\n"
    "--requests (default 100) or --duration seconds; SIGINT/SIGTERM stop it early with the report.\n";

}  // namespace

int RunBench(int argc, char** argv) {
  auto names = RequestFlags();
  for (const char* n : {"concurrency", "rate", "burstiness", "requests", "duration", "warmup", "prompts",
                        "prompt-tokens", "prompt-tokens-stddev", "cancel-rate", "cancel-delay-max-ms",
                        "slo-ttft-ms", "slo-e2e-ms", "json", "http"}) {
    names.insert(n);
  }
  tools::Flags f(names, {"help", "tls"});
  std::string error;
  if (!f.Parse(argc, argv, &error)) {
    std::fprintf(stderr, "chorus bench: %s (see --help)\n", error.c_str());
    return 2;
  }
  if (f.Has("help")) {
    std::fputs(kBenchUsage, stdout);
    return 0;
  }
  int concurrency, requests, warmup, ptok, ptok_sd;
  double rate, burstiness, duration, cancel_rate, cancel_delay_max, slo_ttft, slo_e2e;
  int64_t seed;
  if (!f.GetNumber("concurrency", 4, 1, 4096, &concurrency, &error) ||
      !f.GetNumber("requests", 100, 1, 10000000, &requests, &error) ||
      !f.GetNumber("warmup", 0, 0, 100000, &warmup, &error) ||
      !f.GetNumber("prompt-tokens", 32, 1, 1 << 20, &ptok, &error) ||
      !f.GetNumber("prompt-tokens-stddev", 0, 0, 1 << 20, &ptok_sd, &error) ||
      !f.GetNumber("rate", 0.0, 0.0, 1e6, &rate, &error) ||
      !f.GetNumber("burstiness", 1.0, 0.01, 100.0, &burstiness, &error) ||
      !f.GetNumber("duration", 0.0, 0.0, 86400.0, &duration, &error) ||
      !f.GetNumber("cancel-rate", 0.0, 0.0, 1.0, &cancel_rate, &error) ||
      !f.GetNumber("cancel-delay-max-ms", 500.0, 0.0, 1e7, &cancel_delay_max, &error) ||
      !f.GetNumber("slo-ttft-ms", 1e18, 0.0, 1e18, &slo_ttft, &error) ||
      !f.GetNumber("slo-e2e-ms", 1e18, 0.0, 1e18, &slo_e2e, &error) ||
      !f.GetNumber<int64_t>("seed", 1, 0, INT64_MAX, &seed, &error)) {
    std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
    return 2;
  }
  pb::GenerateRequest base;
  if (!BuildRequest(f, "", &base, &error)) {
    std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
    return 2;
  }
  int64_t timeout_ms = 0;
  (void)f.GetNumber<int64_t>("timeout-ms", 0, 0, int64_t{1} << 40, &timeout_ms, &error);
  int retries = 0;
  if (!f.GetNumber("retries", 0, 0, 100, &retries, &error)) {
    std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
    return 2;
  }

  // Prompts: JSONL {"prompt": "..."} lines, or synthetic words (about one token each).
  std::vector<std::string> prompts;
  std::mt19937_64 rng(static_cast<uint64_t>(seed));
  if (f.Has("prompts")) {
    std::ifstream in(f.Get("prompts"));
    if (!in) {
      std::fprintf(stderr, "chorus bench: cannot read %s\n", f.Get("prompts").c_str());
      return 2;
    }
    std::string line;
    while (std::getline(in, line)) {
      const size_t k = line.find("\"prompt\"");
      if (k == std::string::npos) continue;
      const size_t q1 = line.find('"', line.find(':', k) + 1);
      std::string p;
      for (size_t i = q1 + 1; i < line.size() && line[i] != '"'; ++i) {
        if (line[i] == '\\' && i + 1 < line.size()) {
          const char c = line[++i];
          p += c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
          p += line[i];
        }
      }
      prompts.push_back(p);
    }
    if (prompts.empty()) {
      std::fprintf(stderr, "chorus bench: no {\"prompt\": ...} lines in %s\n", f.Get("prompts").c_str());
      return 2;
    }
  } else {
    static const char* kWords[] = {"the", "cat", "sat", "on", "a", "big", "red", "mat", "and", "then",
                                   "she", "saw", "dog", "run", "to", "park"};
    std::normal_distribution<double> len(ptok, ptok_sd);
    for (int i = 0; i < 64; ++i) {
      const int n = std::max(1, static_cast<int>(std::lround(ptok_sd > 0 ? len(rng) : ptok)));
      std::string p;
      for (int w = 0; w < n; ++w) p += std::string(w ? " " : "") + kWords[rng() % 16];
      prompts.push_back(p);
    }
  }

  Connection conn;
  if (!Connect(f, &conn, &error)) {
    std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
    return 2;
  }
  auto stub = pb::Chorus::NewStub(conn.channel);
  // --http: requests go to the OpenAI-compatible API; stats still come over gRPC (--addr).
  HttpTarget http;
  const bool use_http = f.Has("http");
  if (use_http) {
    if (cancel_rate > 0) {
      std::fprintf(stderr, "chorus bench: --cancel-rate is gRPC only\n");
      return 2;
    }
    if (!HttpBenchConnect(f.Get("http"), conn.auth, &http, &error)) {
      std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
      return 2;
    }
  }
  auto stats = [&](pb::GetStatsResponse* out) {
    grpc::ClientContext ctx;
    conn.Prepare(&ctx);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    return stub->GetStats(&ctx, {}, out).ok();
  };
  pb::GetStatsResponse before, after;
  const bool have_stats = stats(&before);

  const int total = requests + warmup;
  RecordStore records(total);
  g_stop_requested.store(false);
  std::signal(SIGINT, StopBench);
  std::signal(SIGTERM, StopBench);
  std::atomic<int> next{0}, done{0}, failed{0};
  std::mutex rng_mu;
  const auto t0 = Clock::now();
  const double duration_ms = duration * 1000.0;
  auto out_of_time = [&] {
    return g_stop_requested.load() || (duration_ms > 0 && Ms(t0, Clock::now()) >= duration_ms);
  };

  auto run_one = [&](int i) {
    Record& r = records[i];
    r.index = i;
    r.warmup = i < warmup;
    pb::GenerateRequest req = base;
    double cancel_at = -1;
    {
      std::lock_guard<std::mutex> lock(rng_mu);
      req.set_prompt(prompts[rng() % prompts.size()]);
      if (!r.warmup && std::uniform_real_distribution<double>(0, 1)(rng) < cancel_rate) {
        cancel_at = std::uniform_real_distribution<double>(0, cancel_delay_max)(rng);
      }
    }
    if (use_http) {
      const auto start = Clock::now();
      r.start_ms = Ms(t0, start);
      HttpOutcome o = HttpBenchOne(http, HttpBenchBody(http, req), timeout_ms);
      r.e2e_ms = Ms(start, Clock::now());
      r.ttft_ms = o.ttft_ms;
      r.itl_ms = std::move(o.itl_ms);
      r.output_tokens = o.output_tokens;
      r.budget_cut = o.budget_cut;
      r.code = o.error.empty() ? 0 : (o.http_status == 200 ? 500 : o.http_status);
      if (r.code != 0) failed++;
      done++;
      return;
    }
    const auto start = Clock::now();
    r.start_ms = Ms(t0, start);
    // A client-side cancel after a random delay, from a timer thread; it cancels whichever
    // attempt is running (--retries starts a new call after a retryable failure).
    std::mutex m;
    std::condition_variable cv;
    bool finished = false;
    grpc::ClientContext* current = nullptr;  // guarded by m
    std::thread canceller;
    if (cancel_at >= 0) {
      canceller = std::thread([&] {
        std::unique_lock<std::mutex> lock(m);
        if (!cv.wait_for(lock, std::chrono::duration<double, std::milli>(cancel_at), [&] { return finished; })) {
          r.cancelled_by_us = true;
          if (current != nullptr) current->TryCancel();
        }
      });
    }
    grpc::Status s;
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      conn.Prepare(&ctx);
      if (timeout_ms > 0) {  // one deadline for all attempts
        const double left = std::max(1.0, static_cast<double>(timeout_ms) - Ms(start, Clock::now()));
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::microseconds(static_cast<int64_t>(left * 1000)));
      }
      {
        std::lock_guard<std::mutex> lock(m);
        if (r.cancelled_by_us) break;
        current = &ctx;
      }
      auto reader = stub->GenerateStream(&ctx, req);
      pb::GenerateEvent e;
      std::map<int, Clock::time_point> last;
      r.itl_ms.clear();
      r.agents_finished = 0;
      while (reader->Read(&e)) {
        const auto now = Clock::now();
        if (e.has_delta()) {
          if (r.ttft_ms < 0) r.ttft_ms = Ms(start, now);
          auto it = last.find(e.delta().agent());
          if (it != last.end()) r.itl_ms.push_back(Ms(it->second, now));
          last[e.delta().agent()] = now;
        } else if (e.has_agent_finished()) {
          r.agents_finished++;
        } else if (e.has_result()) {
          r.output_tokens = e.result().usage().completion_tokens();
          r.budget_cut = e.result().timing().budget_cut();
          r.agents_used = e.result().agents();
        }
      }
      s = reader->Finish();
      {
        std::lock_guard<std::mutex> lock(m);
        current = nullptr;
      }
      if (s.ok() || attempt >= retries || r.cancelled_by_us || !Retryable(s)) break;
      r.retries++;
      RetryBackoff(attempt);
    }
    {
      std::lock_guard<std::mutex> lock(m);
      finished = true;
    }
    cv.notify_all();
    if (canceller.joinable()) canceller.join();
    r.e2e_ms = Ms(start, Clock::now());
    r.code = s.error_code();
    if (!s.ok() && !(r.cancelled_by_us && s.error_code() == grpc::CANCELLED)) failed++;
    done++;
    // No server (UNAVAILABLE fails at once): pause this worker instead of spinning through
    // --requests in a hot loop while the server restarts.
    if (s.error_code() == grpc::UNAVAILABLE) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };

  std::atomic<bool> stop_progress{false};
  std::thread progress([&] {
    while (!stop_progress) {
      const double secs = std::max(1e-3, Ms(t0, Clock::now()) / 1000);
      std::fprintf(stderr, "\r[bench] %d/%d done, %.1f req/s, %d errors   ", done.load(), total,
                   done.load() / secs, failed.load());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  });

  int sent = 0;
  if (rate > 0) {
    // Open loop: gamma(shape k, mean 1/rate) inter-arrival gaps; k = 1 is Poisson.
    std::gamma_distribution<double> gap(burstiness, 1.0 / (rate * burstiness));
    std::vector<std::thread> inflight;
    auto next_at = Clock::now();
    for (int i = 0; i < total && !out_of_time(); ++i) {
      std::this_thread::sleep_until(next_at);
      inflight.emplace_back(run_one, i);
      ++sent;
      std::lock_guard<std::mutex> lock(rng_mu);
      next_at += std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng)));
    }
    for (auto& t : inflight) t.join();
  } else {
    std::vector<std::thread> workers;
    std::atomic<int> sent_count{0};
    for (int w = 0; w < concurrency; ++w) {
      workers.emplace_back([&] {
        for (;;) {
          const int i = next.fetch_add(1);
          if (i >= total || out_of_time()) break;
          sent_count++;
          run_one(i);
        }
      });
    }
    for (auto& t : workers) t.join();
    sent = sent_count.load();
  }
  const double wall_s = Ms(t0, Clock::now()) / 1000;  // before the progress thread's last sleep
  stop_progress = true;
  progress.join();
  std::fprintf(stderr, "\n");
  // Let the server finish its bookkeeping (cancels reach it after the client has moved on).
  bool have_after = false;
  for (int i = 0; have_stats && i < 100; ++i) {
    have_after = stats(&after);
    if (!have_after || (after.running_requests() == 0 && after.waiting_requests() == 0)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // Aggregate over measured (non-warmup) requests that were sent.
  std::vector<double> ttft, itl, tpot, e2e;
  int completed = 0, cancelled = 0, failures = 0, good = 0, cut = 0, measured = 0, retried = 0;
  int64_t agents_sum = 0;
  int64_t out_tokens = 0;
  std::map<int, int> by_code;
  for (int i = 0; i < sent; ++i) {
    const Record& r = records[i];
    if (r.warmup) continue;
    ++measured;
    by_code[r.code]++;
    retried += r.retries;
    if (r.code == grpc::OK) {
      ++completed;
      out_tokens += r.output_tokens;
      if (r.ttft_ms >= 0) ttft.push_back(r.ttft_ms);
      itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
      if (r.output_tokens > 1 && r.ttft_ms >= 0) tpot.push_back((r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1));
      e2e.push_back(r.e2e_ms);
      cut += r.budget_cut;
      agents_sum += r.agents_used;
      good += r.ttft_ms >= 0 && r.ttft_ms <= slo_ttft && r.e2e_ms <= slo_e2e;
    } else if (r.cancelled_by_us && r.code == grpc::CANCELLED) {
      ++cancelled;
    } else {
      ++failures;
    }
  }
  const Percentiles pt = Summarize(ttft), pi = Summarize(itl), pp = Summarize(tpot), pe = Summarize(e2e);
  std::printf("chorus bench: %d sent, %d completed, %d cancelled, %d failed in %.2f s\n", measured,
              completed, cancelled, failures, wall_s);
  std::printf("%-22s %9s %9s %9s %9s %9s\n", "metric (ms)", "mean", "p50", "p90", "p99", "max");
  for (auto [name, p] : {std::pair{"ttft", pt}, {"inter-token latency", pi}, {"time per output token", pp}, {"end-to-end", pe}}) {
    std::printf("%-22s %9.2f %9.2f %9.2f %9.2f %9.2f\n", name, p.mean, p.p50, p.p90, p.p99, p.max);
  }
  std::printf("request throughput     %.2f req/s\noutput tokens/s        %.1f\n", completed / wall_s, out_tokens / wall_s);
  std::printf("goodput                %.2f req/s (%d of %d meet the SLOs)\n", good / wall_s, good, completed);
  std::printf("budget-cut fraction    %.3f\n", completed ? static_cast<double>(cut) / completed : 0.0);
  const double agents_mean = completed ? static_cast<double>(agents_sum) / completed : 0.0;
  std::printf("agents per request     %.2f\n", agents_mean);
  if (retries > 0) std::printf("retries                %d (UNAVAILABLE or a broken connection, --retries %d)\n", retried, retries);
  std::printf("status codes          ");
  for (auto [c, n] : by_code) std::printf(" %d:%d", c, n);
  std::printf("\n");
  if (have_after) {
    std::printf("server counters        completed +%lld, cancelled +%lld, failed +%lld, tokens +%lld\n",
                static_cast<long long>(after.requests_completed() - before.requests_completed()),
                static_cast<long long>(after.requests_cancelled() - before.requests_cancelled()),
                static_cast<long long>(after.requests_failed() - before.requests_failed()),
                static_cast<long long>(after.tokens_generated() - before.tokens_generated()));
  }

  if (f.Has("json")) {
    std::ofstream o(f.Get("json"));
    o << "{\n  \"sent\": " << measured << ", \"completed\": " << completed << ", \"cancelled\": " << cancelled
      << ", \"failed\": " << failures << ", \"retries\": " << retried << ", \"warmup\": " << warmup << ",\n  \"duration_s\": " << wall_s
      << ", \"mode\": \"" << (rate > 0 ? "open" : "closed") << "\", \"api\": \"" << (use_http ? "http" : "grpc")
      << "\", \"concurrency\": " << concurrency
      << ", \"rate\": " << rate << ", \"burstiness\": " << burstiness << ", \"cancel_rate\": " << cancel_rate
      << ",\n  \"agents\": " << base.reasoning().agents() << ", \"min_agents\": " << base.reasoning().min_agents()
      << ", \"max_agents\": " << base.reasoning().max_agents() << ", \"agents_mean\": " << agents_mean
      << ", \"merge\": \""
      << pb::MergeStrategy_Name(base.reasoning().merge()) << "\", \"budget_ms\": " << base.latency_budget_ms()
      << ", \"max_tokens\": " << base.max_tokens() << ",\n  \"ttft_ms\": " << Json(pt)
      << ",\n  \"itl_ms\": " << Json(pi) << ",\n  \"tpot_ms\": " << Json(pp) << ",\n  \"e2e_ms\": " << Json(pe)
      << ",\n  \"request_throughput_per_s\": " << completed / wall_s
      << ", \"output_tokens\": " << out_tokens << ", \"output_tokens_per_s\": " << out_tokens / wall_s
      << ",\n  \"goodput_per_s\": " << good / wall_s << ", \"slo_ttft_ms\": " << (slo_ttft >= 1e18 ? -1 : slo_ttft)
      << ", \"slo_e2e_ms\": " << (slo_e2e >= 1e18 ? -1 : slo_e2e)
      << ", \"budget_cut_fraction\": " << (completed ? static_cast<double>(cut) / completed : 0.0)
      << ",\n  \"status_codes\": {";
    bool first = true;
    for (auto [c, n] : by_code) {
      o << (first ? "" : ", ") << "\"" << c << "\": " << n;
      first = false;
    }
    o << "},\n";
    if (have_after) {
      o << "  \"server\": {\"requests_completed\": " << after.requests_completed() - before.requests_completed()
        << ", \"requests_cancelled\": " << after.requests_cancelled() - before.requests_cancelled()
        << ", \"requests_failed\": " << after.requests_failed() - before.requests_failed()
        << ", \"tokens_generated\": " << after.tokens_generated() - before.tokens_generated()
        << ", \"steps_run\": " << after.steps_run() - before.steps_run() << "},\n";
    }
    o << "  \"requests\": [\n";
    for (int i = 0; i < sent; ++i) {
      const Record& r = records[i];
      o << "    {\"index\": " << r.index << ", \"warmup\": " << (r.warmup ? "true" : "false")
        << ", \"start_ms\": " << r.start_ms << ", \"ttft_ms\": " << r.ttft_ms << ", \"e2e_ms\": " << r.e2e_ms
        << ", \"output_tokens\": " << r.output_tokens << ", \"status_code\": " << r.code
        << ", \"cancelled_by_client\": " << (r.cancelled_by_us ? "true" : "false")
        << ", \"budget_cut\": " << (r.budget_cut ? "true" : "false") << "}" << (i + 1 < sent ? ",\n" : "\n");
    }
    o << "  ]\n}\n";
  }
  (void)Escape;
  return failures > 0 ? 1 : 0;
}

}  // namespace chorus::client

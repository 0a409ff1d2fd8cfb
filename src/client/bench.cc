// chorus bench: load generator for chorusd. Every request is a GenerateStream call so that TTFT
// and inter-token latency are measured client-side.
//
// Definitions (all client-side, milliseconds):
//   ttft      send -> first token delta of any agent
//   itl       time between consecutive deltas of one agent's stream (every gap, all agents)
//   tpot      (e2e - ttft) / (output tokens of the request - 1), output tokens = all agents
//   e2e       send -> final status
//   goodput   completed requests meeting --slo-ttft-ms and --slo-e2e-ms, per second
//
// bench_setup.cc reads the flags and the prompts, bench_report.cc writes the results.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <thread>
#include <utility>

#include "bench_internal.h"

namespace chorus::client {
namespace pb = chorus::v1;
namespace bench {
namespace {

// SIGINT/SIGTERM end a bench like --duration does: no new calls, in-flight calls finish, the
// report and the JSON are written.
std::atomic<bool> g_stop_requested{false};  // lock-free: safe in a signal handler
static_assert(std::atomic<bool>::is_always_lock_free);
void StopBench(int) { g_stop_requested.store(true); }

// A client-side cancel after a random delay, from a timer thread; it cancels whichever
// attempt is running (--retries starts a new call after a retryable failure).
class Canceller {
 public:
  // No timer when cancel_at_ms < 0. Sets r->cancelled_by_us when it fires.
  Canceller(double cancel_at_ms, Record* r) : r_(r) {
    if (cancel_at_ms < 0) return;
    thread_ = std::thread([this, cancel_at_ms] {
      const auto until = std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                             std::chrono::duration<double, std::milli>(cancel_at_ms));
      MutexLock lock(&mu_);
      while (!finished_) {
        const auto left =
            std::chrono::ceil<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        cv_.WaitFor(&mu_, left);
      }
      if (!finished_) {
        r_->cancelled_by_us = true;
        if (current_ != nullptr) current_->TryCancel();
      }
    });
  }
  Canceller(const Canceller&) = delete;
  Canceller& operator=(const Canceller&) = delete;
  ~Canceller() { Finish(); }

  // An attempt starts with `ctx`; false when the cancel fired already (make no attempt).
  bool Begin(grpc::ClientContext* ctx) {
    MutexLock lock(&mu_);
    if (r_->cancelled_by_us) return false;
    current_ = ctx;
    return true;
  }
  void End() {
    MutexLock lock(&mu_);
    current_ = nullptr;
  }
  bool Fired() {
    MutexLock lock(&mu_);
    return r_->cancelled_by_us;
  }
  // The request is over: stops the timer.
  void Finish() {
    {
      MutexLock lock(&mu_);
      finished_ = true;
    }
    cv_.NotifyAll();
    if (thread_.joinable()) thread_.join();
  }

 private:
  Record* const r_;
  Mutex mu_;
  CondVar cv_;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::thread thread_;
};

// One GenerateStream call: the token timings, output tokens and budget cut go into *r.
grpc::Status StreamOnce(pb::Chorus::Stub* stub, grpc::ClientContext* ctx,
                        const pb::GenerateRequest& req, Clock::time_point start, Record* r) {
  auto reader = stub->GenerateStream(ctx, req);
  pb::GenerateEvent e;
  std::map<int, Clock::time_point> last;
  r->itl_ms.clear();
  r->agents_finished = 0;
  while (reader->Read(&e)) {
    const auto now = Clock::now();
    if (e.has_delta()) {
      if (r->ttft_ms < 0) r->ttft_ms = Ms(start, now);
      auto it = last.find(e.delta().agent());
      if (it != last.end()) r->itl_ms.push_back(Ms(it->second, now));
      last[e.delta().agent()] = now;
    } else if (e.has_agent_finished()) {
      r->agents_finished++;
    } else if (e.has_result()) {
      r->output_tokens = e.result().usage().completion_tokens();
      r->budget_cut = e.result().timing().budget_cut();
      r->agents_used = e.result().agents();
    }
  }
  return reader->Finish();
}

bool GetStats(const Connection& conn, pb::Chorus::Stub* stub, pb::GetStatsResponse* out) {
  grpc::ClientContext ctx;
  conn.Prepare(&ctx);
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return stub->GetStats(&ctx, {}, out).ok();
}

// The server's counters since `before`, once it has finished its bookkeeping (cancels reach it
// after the client has moved on); nullopt when GetStats fails.
std::optional<ServerDelta> ServerDeltaSince(const Connection& conn, pb::Chorus::Stub* stub,
                                            const pb::GetStatsResponse& before) {
  pb::GetStatsResponse after;
  bool have_after = false;
  for (int i = 0; i < 100; ++i) {
    have_after = GetStats(conn, stub, &after);
    if (!have_after || (after.running_requests() == 0 && after.waiting_requests() == 0)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (!have_after) return std::nullopt;
  ServerDelta d;
  d.requests_completed = after.requests_completed() - before.requests_completed();
  d.requests_cancelled = after.requests_cancelled() - before.requests_cancelled();
  d.requests_failed = after.requests_failed() - before.requests_failed();
  d.tokens_generated = after.tokens_generated() - before.tokens_generated();
  d.steps_run = after.steps_run() - before.steps_run();
  return d;
}

// The load: closed loop (--concurrency workers) or open loop (--rate arrivals), each request a
// streamed gRPC call (or an HTTP one with --http), recorded by index.
class LoadRun {
 public:
  LoadRun(const BenchConfig& cfg, const Connection& conn, pb::Chorus::Stub* stub,
          const HttpTarget& http, std::vector<std::string> prompts, std::mt19937_64 rng)
      : cfg_(cfg),
        conn_(conn),
        stub_(stub),
        http_(http),
        prompts_(std::move(prompts)),
        rng_(std::move(rng)),
        total_(cfg.requests + cfg.warmup),
        records_(total_) {}

  // Runs the load to its end (--requests, --duration or a signal); returns the requests sent.
  int Run() {
    t0_ = Clock::now();
    std::atomic<bool> stop_progress{false};
    std::thread progress([&] { Progress(stop_progress); });
    const int sent = cfg_.rate > 0 ? OpenLoop() : ClosedLoop();
    wall_s_ = Ms(t0_, Clock::now()) / 1000;  // before the progress thread's last sleep
    stop_progress = true;
    progress.join();
    std::fprintf(stderr, "\n");
    return sent;
  }
  double wall_s() const { return wall_s_; }
  RecordStore& records() { return records_; }

 private:
  bool OutOfTime() const {
    const double duration_ms = cfg_.duration_s * 1000.0;
    return g_stop_requested.load() || (duration_ms > 0 && Ms(t0_, Clock::now()) >= duration_ms);
  }

  void Progress(const std::atomic<bool>& stop) {
    while (!stop) {
      const double secs = std::max(1e-3, Ms(t0_, Clock::now()) / 1000);
      std::fprintf(stderr, "\r[bench] %d/%d done, %.1f req/s, %d errors   ", done_.load(), total_,
                   done_.load() / secs, failed_.load());
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }

  // Open loop: gamma(shape k, mean 1/rate) inter-arrival gaps; k = 1 is Poisson.
  int OpenLoop() {
    std::gamma_distribution<double> gap(cfg_.burstiness, 1.0 / (cfg_.rate * cfg_.burstiness));
    std::vector<std::thread> inflight;
    int sent = 0;
    auto next_at = Clock::now();
    for (int i = 0; i < total_ && !OutOfTime(); ++i) {
      std::this_thread::sleep_until(next_at);
      inflight.emplace_back([this, i] { RunOne(i); });
      ++sent;
      MutexLock lock(&rng_mu_);
      next_at +=
          std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(gap(rng_)));
    }
    for (auto& t : inflight) t.join();
    return sent;
  }

  int ClosedLoop() {
    std::vector<std::thread> workers;
    std::atomic<int> next{0}, sent{0};
    for (int w = 0; w < cfg_.concurrency; ++w) {
      workers.emplace_back([&] {
        for (;;) {
          const int i = next.fetch_add(1);
          if (i >= total_ || OutOfTime()) break;
          sent++;
          RunOne(i);
        }
      });
    }
    for (auto& t : workers) t.join();
    return sent.load();
  }

  void RunOne(int i) {
    Record& r = records_[i];
    r.index = i;
    r.warmup = i < cfg_.warmup;
    pb::GenerateRequest req = cfg_.base;
    double cancel_at = -1;
    {
      MutexLock lock(&rng_mu_);
      req.set_prompt(prompts_[rng_() % prompts_.size()]);
      if (!r.warmup && std::uniform_real_distribution<double>(0, 1)(rng_) < cfg_.cancel_rate) {
        cancel_at = std::uniform_real_distribution<double>(0, cfg_.cancel_delay_max_ms)(rng_);
      }
    }
    if (cfg_.use_http) {
      RunHttp(req, &r);
    } else {
      RunGrpc(req, cancel_at, &r);
    }
  }

  void RunHttp(const pb::GenerateRequest& req, Record* r) {
    const auto start = Clock::now();
    r->start_ms = Ms(t0_, start);
    HttpOutcome o = HttpBenchOne(http_, HttpBenchBody(http_, req), cfg_.timeout_ms);
    r->e2e_ms = Ms(start, Clock::now());
    r->ttft_ms = o.ttft_ms;
    r->itl_ms = std::move(o.itl_ms);
    r->output_tokens = o.output_tokens;
    r->budget_cut = o.budget_cut;
    r->code = o.error.empty() ? 0 : (o.http_status == 200 ? 500 : o.http_status);
    if (r->code != 0) failed_++;
    done_++;
  }

  void RunGrpc(const pb::GenerateRequest& req, double cancel_at, Record* r) {
    const auto start = Clock::now();
    r->start_ms = Ms(t0_, start);
    Canceller canceller(cancel_at, r);
    grpc::Status s;
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      conn_.Prepare(&ctx);
      if (cfg_.timeout_ms > 0) {  // one deadline for all attempts
        const double left =
            std::max(1.0, static_cast<double>(cfg_.timeout_ms) - Ms(start, Clock::now()));
        ctx.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::microseconds(static_cast<int64_t>(left * 1000)));
      }
      if (!canceller.Begin(&ctx)) break;
      s = StreamOnce(stub_, &ctx, req, start, r);
      canceller.End();
      if (s.ok() || attempt >= cfg_.retries || canceller.Fired() || !Retryable(s)) break;
      r->retries++;
      RetryBackoff(attempt);
    }
    canceller.Finish();
    r->e2e_ms = Ms(start, Clock::now());
    r->code = s.error_code();
    if (!s.ok()) r->error = s.error_message().substr(0, 200);
    if (!s.ok() && !(r->cancelled_by_us && s.error_code() == grpc::CANCELLED)) failed_++;
    done_++;
    // No server (UNAVAILABLE fails at once): pause this worker instead of spinning through
    // --requests in a hot loop while the server restarts.
    if (s.error_code() == grpc::UNAVAILABLE) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }

  const BenchConfig& cfg_;
  const Connection& conn_;
  pb::Chorus::Stub* const stub_;
  const HttpTarget& http_;
  const std::vector<std::string> prompts_;
  Mutex rng_mu_;
  std::mt19937_64 rng_ ABSL_GUARDED_BY(rng_mu_);
  const int total_;
  RecordStore records_;
  Clock::time_point t0_;
  double wall_s_ = 0;
  std::atomic<int> done_{0}, failed_{0};
};

int Main(int argc, char** argv) {
  tools::Flags f = BenchFlags();
  BenchConfig cfg;
  if (const int rc = ParseBenchCommandLine(argc, argv, &f, &cfg); rc >= 0) return rc;
  // Prompts: JSONL {"prompt": "..."} lines, or synthetic words (about one token each).
  std::mt19937_64 rng(static_cast<uint64_t>(cfg.seed));
  std::vector<std::string> prompts;
  Connection conn;
  HttpTarget http;  // --http: requests go to the OpenAI-compatible API; stats still over gRPC
  std::string error;
  if (!LoadPrompts(cfg, &rng, &prompts, &error) || !Connect(f, &conn, &error) ||
      !ConnectHttp(cfg, conn, &http, &error)) {
    std::fprintf(stderr, "chorus bench: %s\n", error.c_str());
    return 2;
  }
  auto stub = pb::Chorus::NewStub(conn.channel);
  pb::GetStatsResponse before;
  const bool have_stats = GetStats(conn, stub.get(), &before);

  LoadRun run(cfg, conn, stub.get(), http, std::move(prompts), std::move(rng));
  g_stop_requested.store(false);
  std::signal(SIGINT, StopBench);
  std::signal(SIGTERM, StopBench);
  const int sent = run.Run();
  std::optional<ServerDelta> server;
  if (have_stats) server = ServerDeltaSince(conn, stub.get(), before);

  const BenchReport report = Aggregate(cfg, run.records(), sent, run.wall_s());
  PrintReport(cfg, report, server);
  if (cfg.has_json) WriteJson(cfg, report, server, run.records(), sent);
  return report.failures > 0 ? 1 : 0;
}

}  // namespace
}  // namespace bench

int RunBench(int argc, char** argv) { return bench::Main(argc, argv); }

}  // namespace chorus::client

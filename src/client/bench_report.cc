// chorus bench: the aggregates over a run, the summary table and the --json file.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <utility>

#include "bench_internal.h"

namespace chorus::client::bench {
namespace pb = chorus::v1;
namespace {

// Ordered: the file keeps the field order it always had (summary first, then the requests).
using ojson = nlohmann::ordered_json;

ojson Json(const Percentiles& p) {
  return ojson{{"count", p.count}, {"mean", p.mean}, {"p50", p.p50},
               {"p90", p.p90},     {"p99", p.p99},   {"max", p.max}};
}

// The run's settings and results, in the file's field order.
ojson SummaryJson(const BenchConfig& cfg, const BenchReport& rep) {
  const pb::GenerateRequest& base = cfg.base;
  ojson j;
  j["sent"] = rep.measured;
  j["completed"] = rep.completed;
  j["cancelled"] = rep.cancelled;
  j["failed"] = rep.failures;
  j["retries"] = rep.retried;
  j["warmup"] = cfg.warmup;
  j["duration_s"] = rep.wall_s;
  j["mode"] = cfg.rate > 0 ? "open" : "closed";
  j["api"] = cfg.use_http ? "http" : "grpc";
  j["concurrency"] = cfg.concurrency;
  j["rate"] = cfg.rate;
  j["burstiness"] = cfg.burstiness;
  j["cancel_rate"] = cfg.cancel_rate;
  j["agents"] = base.reasoning().agents();
  j["min_agents"] = base.reasoning().min_agents();
  j["max_agents"] = base.reasoning().max_agents();
  j["agents_mean"] = rep.agents_mean;
  j["merge"] = pb::MergeStrategy_Name(base.reasoning().merge());
  j["budget_ms"] = base.latency_budget_ms();
  j["max_tokens"] = base.max_tokens();
  j["ttft_ms"] = Json(rep.ttft);
  j["itl_ms"] = Json(rep.itl);
  j["tpot_ms"] = Json(rep.tpot);
  j["e2e_ms"] = Json(rep.e2e);
  j["request_throughput_per_s"] = rep.completed / rep.wall_s;
  j["output_tokens"] = rep.out_tokens;
  j["output_tokens_per_s"] = rep.out_tokens / rep.wall_s;
  j["goodput_per_s"] = rep.good / rep.wall_s;
  j["slo_ttft_ms"] = cfg.slo_ttft_ms >= 1e18 ? -1.0 : cfg.slo_ttft_ms;
  j["slo_e2e_ms"] = cfg.slo_e2e_ms >= 1e18 ? -1.0 : cfg.slo_e2e_ms;
  j["budget_cut_fraction"] = rep.budget_cut_fraction;
  return j;
}

ojson RequestsJson(RecordStore& records, int sent) {
  ojson out = ojson::array();
  for (int i = 0; i < sent; ++i) {
    const Record& r = records[i];
    out.push_back(ojson{{"index", r.index},
                        {"warmup", r.warmup},
                        {"start_ms", r.start_ms},
                        {"ttft_ms", r.ttft_ms},
                        {"e2e_ms", r.e2e_ms},
                        {"output_tokens", r.output_tokens},
                        {"status_code", r.code},
                        {"cancelled_by_client", r.cancelled_by_us},
                        {"budget_cut", r.budget_cut}});
  }
  return out;
}

}  // namespace

Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    return v[std::min(v.size() - 1, static_cast<size_t>(q * (v.size() - 1) + 0.5))];
  };
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

BenchReport Aggregate(const BenchConfig& cfg, RecordStore& records, int sent, double wall_s) {
  BenchReport rep;
  rep.wall_s = wall_s;
  std::vector<double> ttft, itl, tpot, e2e;
  for (int i = 0; i < sent; ++i) {
    const Record& r = records[i];
    if (r.warmup) continue;
    ++rep.measured;
    rep.by_code[r.code]++;
    rep.retried += r.retries;
    if (r.code == grpc::OK) {
      ++rep.completed;
      rep.out_tokens += r.output_tokens;
      if (r.ttft_ms >= 0) ttft.push_back(r.ttft_ms);
      itl.insert(itl.end(), r.itl_ms.begin(), r.itl_ms.end());
      if (r.output_tokens > 1 && r.ttft_ms >= 0) {
        tpot.push_back((r.e2e_ms - r.ttft_ms) / (r.output_tokens - 1));
      }
      e2e.push_back(r.e2e_ms);
      rep.cut += r.budget_cut;
      rep.agents_sum += r.agents_used;
      rep.good += r.ttft_ms >= 0 && r.ttft_ms <= cfg.slo_ttft_ms && r.e2e_ms <= cfg.slo_e2e_ms;
    } else if (r.cancelled_by_us && r.code == grpc::CANCELLED) {
      ++rep.cancelled;
    } else {
      ++rep.failures;
      const std::string kind = std::to_string(r.code) + ": " + r.error;
      if (rep.failure_messages.count(kind) || rep.failure_messages.size() < 5) {
        rep.failure_messages[kind]++;
      }
    }
  }
  rep.ttft = Summarize(std::move(ttft));
  rep.itl = Summarize(std::move(itl));
  rep.tpot = Summarize(std::move(tpot));
  rep.e2e = Summarize(std::move(e2e));
  rep.budget_cut_fraction = rep.completed ? static_cast<double>(rep.cut) / rep.completed : 0.0;
  rep.agents_mean = rep.completed ? static_cast<double>(rep.agents_sum) / rep.completed : 0.0;
  return rep;
}

void PrintReport(const BenchConfig& cfg, const BenchReport& rep,
                 const std::optional<ServerDelta>& server) {
  const double wall_s = rep.wall_s;
  std::printf("chorus bench: %d sent, %d completed, %d cancelled, %d failed in %.2f s\n",
              rep.measured, rep.completed, rep.cancelled, rep.failures, wall_s);
  std::printf("%-22s %9s %9s %9s %9s %9s\n", "metric (ms)", "mean", "p50", "p90", "p99", "max");
  for (auto [name, p] : {std::pair{"ttft", rep.ttft},
                         {"inter-token latency", rep.itl},
                         {"time per output token", rep.tpot},
                         {"end-to-end", rep.e2e}}) {
    std::printf("%-22s %9.2f %9.2f %9.2f %9.2f %9.2f\n", name, p.mean, p.p50, p.p90, p.p99, p.max);
  }
  std::printf("request throughput     %.2f req/s\noutput tokens/s        %.1f\n",
              rep.completed / wall_s, rep.out_tokens / wall_s);
  std::printf("goodput                %.2f req/s (%d of %d meet the SLOs)\n", rep.good / wall_s,
              rep.good, rep.completed);
  std::printf("budget-cut fraction    %.3f\n", rep.budget_cut_fraction);
  std::printf("agents per request     %.2f\n", rep.agents_mean);
  if (cfg.retries > 0) {
    std::printf(
        "retries                %d (UNAVAILABLE, a reset or a broken connection, --retries %d)\n",
        rep.retried, cfg.retries);
  }
  std::printf("status codes          ");
  for (auto [c, n] : rep.by_code) std::printf(" %d:%d", c, n);
  std::printf("\n");
  for (const auto& [kind, n] : rep.failure_messages) {
    std::printf("failed                 %d x %s\n", n, kind.c_str());
  }
  if (server) {
    std::printf(
        "server counters        completed +%lld, cancelled +%lld, failed +%lld, tokens +%lld\n",
        static_cast<long long>(server->requests_completed),
        static_cast<long long>(server->requests_cancelled),
        static_cast<long long>(server->requests_failed),
        static_cast<long long>(server->tokens_generated));
  }
}

void WriteJson(const BenchConfig& cfg, const BenchReport& rep,
               const std::optional<ServerDelta>& server, RecordStore& records, int sent) {
  ojson j = SummaryJson(cfg, rep);
  ojson codes = ojson::object();
  for (auto [c, n] : rep.by_code) codes[std::to_string(c)] = n;
  j["status_codes"] = std::move(codes);
  if (server) {
    j["server"] = ojson{{"requests_completed", server->requests_completed},
                        {"requests_cancelled", server->requests_cancelled},
                        {"requests_failed", server->requests_failed},
                        {"tokens_generated", server->tokens_generated},
                        {"steps_run", server->steps_run}};
  }
  j["requests"] = RequestsJson(records, sent);
  std::ofstream o(cfg.json_path);
  o << j.dump(2) << "\n";
}

}  // namespace chorus::client::bench

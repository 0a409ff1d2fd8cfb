#include "chorus/metrics/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <httplib.h>
#include <prometheus/text_serializer.h>

#include <mutex>
#include <thread>

#include "chorus/core/host_port.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

using prometheus::Histogram;

Histogram::BucketBoundaries LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};
}

// Scheduler and KV gauges, read from the runtime when Prometheus scrapes.
class StatsCollectable : public prometheus::Collectable {
 public:
  explicit StatsCollectable(std::function<RuntimeStats()> stats) : stats_(std::move(stats)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    const RuntimeStats s = stats_();
    std::vector<prometheus::MetricFamily> out;
    auto gauge = [&](const char* name, const char* help, double v) {
      prometheus::MetricFamily f;
      f.name = name;
      f.help = help;
      f.type = prometheus::MetricType::Gauge;
      prometheus::ClientMetric m;
      m.gauge.value = v;
      f.metric.push_back(m);
      out.push_back(std::move(f));
    };
    gauge("chorus_running_requests", "Requests admitted and running.", s.running_requests);
    gauge("chorus_waiting_requests", "Requests queued for admission.", s.waiting_requests);
    gauge("chorus_running_agents", "Agents (drafts) running.", s.running_agents);
    gauge("chorus_waiting_agents", "Agents of queued requests.", s.waiting_agents);
    gauge("chorus_kv_blocks_total", "KV cache blocks.", s.kv_blocks_total);
    gauge("chorus_kv_blocks_used", "KV cache blocks referenced by requests.", s.kv_blocks_used);
    gauge("chorus_prefix_cache_blocks", "Idle blocks kept for prefix reuse.", s.prefix_cache_blocks);
    gauge("chorus_preemptions", "Preemptions by recompute since start.", static_cast<double>(s.preemptions));
    return out;
  }

 private:
  std::function<RuntimeStats()> stats_;
};

}  // namespace

class Metrics::Impl {
 public:
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<StatsCollectable> stats;
  httplib::Server http;  // serves GET /metrics (cpp-httplib; civetweb fails to start beside gRPC)
  std::thread http_thread;
  int port = 0;
  prometheus::Family<prometheus::Counter>* requests = nullptr;
  prometheus::Family<prometheus::Counter>* http_requests = nullptr;
  Histogram* e2e = nullptr;
  Histogram* ttft = nullptr;
  Histogram* queue = nullptr;
  Histogram* step = nullptr;
  Histogram* elastic = nullptr;           // agents chosen for elastic requests
  Histogram* elastic_fraction = nullptr;  // chosen / max_agents
  prometheus::Counter* tokens = nullptr;
  prometheus::Counter* steps = nullptr;
  prometheus::Counter* budget_cut = nullptr;
  std::mutex mu;  // prometheus-cpp metrics are thread-safe; this guards the family lookups
};

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Start(const std::string& listen_address,
                                                        std::function<RuntimeStats()> stats) {
  auto impl = std::make_unique<Impl>();
  auto& r = *impl->registry;
  impl->requests = &prometheus::BuildCounter().Name("chorus_requests_total").Help("Requests by final status.").Register(r);
  impl->http_requests = &prometheus::BuildCounter().Name("chorus_http_requests_total").Help("OpenAI-compatible HTTP API requests by endpoint and HTTP status.").Register(r);
  impl->e2e = &prometheus::BuildHistogram().Name("chorus_request_duration_seconds").Help("Arrival to response.")
                   .Register(r).Add({}, LatencyBuckets());
  impl->ttft = &prometheus::BuildHistogram().Name("chorus_time_to_first_token_seconds").Help("Arrival to the first token of any agent.")
                    .Register(r).Add({}, LatencyBuckets());
  impl->queue = &prometheus::BuildHistogram().Name("chorus_queue_time_seconds").Help("Arrival to the first scheduled step.")
                     .Register(r).Add({}, LatencyBuckets());
  impl->step = &prometheus::BuildHistogram().Name("chorus_step_duration_seconds").Help("One batched forward step.")
                    .Register(r).Add({}, LatencyBuckets());
  impl->elastic = &prometheus::BuildHistogram().Name("chorus_elastic_agents").Help("Drafts the server chose for elastic requests (reasoning.max_agents).")
                       .Register(r).Add({}, Histogram::BucketBoundaries{1, 2, 3, 4, 6, 8, 12, 16, 32, 64});
  impl->elastic_fraction = &prometheus::BuildHistogram().Name("chorus_elastic_agents_fraction").Help("Chosen drafts / max_agents for elastic requests.")
                                .Register(r).Add({}, Histogram::BucketBoundaries{0.125, 0.25, 0.5, 0.75, 1});
  impl->tokens = &prometheus::BuildCounter().Name("chorus_generated_tokens_total").Help("Tokens generated, all agents.").Register(r).Add({});
  impl->steps = &prometheus::BuildCounter().Name("chorus_steps_total").Help("Forward steps run.").Register(r).Add({});
  impl->budget_cut = &prometheus::BuildCounter().Name("chorus_budget_cut_requests_total").Help("Requests whose drafts the latency budget cut.").Register(r).Add({});
  impl->stats = std::make_shared<StatsCollectable>(std::move(stats));
  auto host_port = SplitHostPort(listen_address, "metrics_listen_address");
  if (!host_port.ok()) return host_port.status();
  const auto& [host, port] = *host_port;
  Impl* raw = impl.get();
  impl->http.Get("/metrics", [raw](const httplib::Request&, httplib::Response& res) {
    auto families = raw->registry->Collect();
    auto gauges = raw->stats->Collect();
    families.insert(families.end(), gauges.begin(), gauges.end());
    res.set_content(prometheus::TextSerializer().Serialize(families), "text/plain; version=0.0.4");
  });
  impl->port = port == 0 ? impl->http.bind_to_any_port(host) : (impl->http.bind_to_port(host, port) ? port : -1);
  if (impl->port <= 0) return absl::UnavailableError(StrCat("metrics: cannot listen on ", listen_address));
  impl->http_thread = std::thread([raw] { raw->http.listen_after_bind(); });
  return std::unique_ptr<Metrics>(new Metrics(std::move(impl)));
}

Metrics::Metrics(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Metrics::~Metrics() {
  impl_->http.stop();
  if (impl_->http_thread.joinable()) impl_->http_thread.join();
}

int Metrics::port() const { return impl_->port; }

void Metrics::OnStep(int rows, double ms) {
  impl_->step->Observe(ms / 1e3);
  impl_->steps->Increment();
}

void Metrics::OnRequestEnd(std::string_view status, double queue_ms, double ttft_ms, double e2e_ms,
                           int completion_tokens, bool budget_cut) {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->requests->Add({{"status", std::string(status)}}).Increment();
  }
  impl_->e2e->Observe(e2e_ms / 1e3);
  if (queue_ms >= 0) impl_->queue->Observe(queue_ms / 1e3);
  if (ttft_ms >= 0) impl_->ttft->Observe(ttft_ms / 1e3);
  impl_->tokens->Increment(completion_tokens);
  if (budget_cut) impl_->budget_cut->Increment();
}

void Metrics::OnElasticChoice(int agents, int max_agents) {
  impl_->elastic->Observe(agents);
  impl_->elastic_fraction->Observe(max_agents > 0 ? static_cast<double>(agents) / max_agents : 1.0);
}

void Metrics::OnHttpResponse(std::string_view endpoint, int http_status) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->http_requests->Add({{"endpoint", std::string(endpoint)}, {"code", std::to_string(http_status)}}).Increment();
}

}  // namespace chorus

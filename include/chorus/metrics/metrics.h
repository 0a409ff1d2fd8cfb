// Prometheus metrics (prometheus-cpp registry and text format; cpp-httplib serves them):
// request outcomes and latencies, step times, token counters, and scheduler/KV gauges read
// from the runtime at scrape time, on HTTP GET /metrics. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "chorus/core/observer.h"
#include "chorus/core/stats.h"

namespace chorus {

class Metrics : public RuntimeObserver {
 public:
  // Listens on HOST:PORT (port 0 picks one). `stats` is called at each scrape.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& listen_address,
                                                        std::function<RuntimeStats()> stats);
  ~Metrics() override;
  int port() const;
  void OnStep(int rows, double ms) override;
  void OnRequestEnd(std::string_view owner, std::string_view status, double queue_ms,
                    double ttft_ms, double e2e_ms, int completion_tokens, bool budget_cut) override;
  // A request of `owner` refused before it ran (admission, limits, auth): `reason` is the status
  // code's name ("resource_exhausted", "invalid_argument", ...).
  void OnRejected(std::string_view owner, std::string_view reason);
  void OnElasticChoice(int agents, int max_agents) override;
  // One answered HTTP API request (chorus_http_requests_total{endpoint, code}).
  void OnHttpResponse(std::string_view endpoint, int http_status);

  class Impl;

 private:
  explicit Metrics(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace chorus

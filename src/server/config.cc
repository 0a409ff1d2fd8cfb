#include <google/protobuf/text_format.h>

#include <fstream>
#include <set>
#include <sstream>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/server/security.h"
#include "chorus/server/server.h"

namespace chorus {

chorus::v1::ServerConfig DefaultServerConfig() {
  chorus::v1::ServerConfig c;
  c.set_listen_address("127.0.0.1:50051");
  c.set_model_path("models/stories260K.gguf");
  c.set_num_threads(0);
  c.set_backend("cpu");
  c.set_tensor_parallel_size(1);
  c.set_kv_block_size_tokens(16);
  c.set_kv_num_blocks(4096);
  c.set_prefix_cache_enabled(true);
  c.set_max_num_batched_tokens(512);
  c.set_max_running_agents(256);
  c.set_max_admission_bypass(8);
  c.set_max_queued_requests(256);
  c.set_max_queued_agents(2048);
  c.set_max_concurrent_admissions(16);
  c.set_max_agents_per_request(16);
  c.set_max_tokens_limit(4096);
  c.set_max_prompt_bytes(1 << 20);
  c.set_default_max_tokens(256);
  c.set_default_latency_budget_ms(30000);
  c.set_max_latency_budget_ms(3600000);
  c.set_merge_reserve_ms(5);
  c.set_deadline_margin_ms(20);
  c.set_drain_timeout_ms(20000);
  c.set_engine_stall_timeout_ms(10000);
  c.set_metrics_listen_address("127.0.0.1:9464");
  c.set_stream_backlog_max_bytes(4 << 20);
  c.set_http_max_connections(64);
  c.set_grpc_max_concurrent_streams(64);
  c.set_grpc_keepalive_time_ms(60000);
  c.set_grpc_keepalive_timeout_ms(20000);
  c.set_grpc_min_client_ping_interval_ms(10000);
  c.set_grpc_max_connection_idle_ms(300000);
  c.set_grpc_max_connection_age_ms(7200000);
  c.set_grpc_max_connection_age_grace_ms(3600000);
  return c;
}

absl::StatusOr<chorus::v1::ServerConfig> LoadServerConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(StrCat("config: cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  chorus::v1::ServerConfig c = DefaultServerConfig();
  if (!google::protobuf::TextFormat::MergeFromString(ss.str(), &c)) {
    return absl::InvalidArgumentError(StrCat("config: ", path, " is not a valid ServerConfig text proto"));
  }
  CHORUS_RETURN_IF_ERROR(ValidateServerConfig(c));
  return c;
}

namespace {

absl::Status Range(std::string_view field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        StrCat("config: ", field, " = ", v, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

absl::Status ValidateConnectionLimits(const chorus::v1::ServerConfig& c) {
  constexpr int64_t kDay = 86400000;
  CHORUS_RETURN_IF_ERROR(
      Range("stream_backlog_max_bytes", c.stream_backlog_max_bytes(), 1024, int64_t{1} << 32));
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_max_concurrent_streams", c.grpc_max_concurrent_streams(), 1, 1 << 16));
  CHORUS_RETURN_IF_ERROR(Range("grpc_keepalive_time_ms", c.grpc_keepalive_time_ms(), 1000, kDay));
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_keepalive_timeout_ms", c.grpc_keepalive_timeout_ms(), 1000, kDay));
  CHORUS_RETURN_IF_ERROR(Range("grpc_min_client_ping_interval_ms",
                               c.grpc_min_client_ping_interval_ms(), 0, kDay));
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_max_connection_idle_ms", c.grpc_max_connection_idle_ms(), 0, 30 * kDay));
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_max_connection_age_ms", c.grpc_max_connection_age_ms(), 0, 30 * kDay));
  CHORUS_RETURN_IF_ERROR(Range("grpc_max_connection_age_grace_ms",
                               c.grpc_max_connection_age_grace_ms(), 0, 30 * kDay));
  CHORUS_RETURN_IF_ERROR(Range("http_max_connections", c.http_max_connections(), 1, 4096));
  return Range("grpc_memory_quota_bytes", c.grpc_memory_quota_bytes(), 0, int64_t{1} << 40);
}

}  // namespace

absl::Status ValidateServerConfig(const chorus::v1::ServerConfig& c) {
  const auto range = Range;
  CHORUS_RETURN_IF_ERROR(range("num_threads", c.num_threads(), 0, 1024));
  CHORUS_RETURN_IF_ERROR(range("kv_block_size_tokens", c.kv_block_size_tokens(), 1, 1024));
  CHORUS_RETURN_IF_ERROR(range("kv_num_blocks", c.kv_num_blocks(), 1, 1 << 24));
  CHORUS_RETURN_IF_ERROR(range("max_num_batched_tokens", c.max_num_batched_tokens(), 1, 1 << 20));
  CHORUS_RETURN_IF_ERROR(range("max_running_agents", c.max_running_agents(), 1, 1 << 20));
  CHORUS_RETURN_IF_ERROR(range("max_admission_bypass", c.max_admission_bypass(), 0, 1 << 20));
  CHORUS_RETURN_IF_ERROR(range("max_queued_requests", c.max_queued_requests(), 0, 1 << 24));
  CHORUS_RETURN_IF_ERROR(range("max_queued_agents", c.max_queued_agents(), 0, 1 << 24));
  CHORUS_RETURN_IF_ERROR(
      range("max_concurrent_admissions", c.max_concurrent_admissions(), 1, 1 << 16));
  CHORUS_RETURN_IF_ERROR(range("max_agents_per_request", c.max_agents_per_request(), 1, 1024));
  CHORUS_RETURN_IF_ERROR(range("max_tokens_limit", c.max_tokens_limit(), 1, 1 << 24));
  CHORUS_RETURN_IF_ERROR(range("max_prompt_bytes", c.max_prompt_bytes(), 1, 1 << 30));
  CHORUS_RETURN_IF_ERROR(range("default_max_tokens", c.default_max_tokens(), 1, c.max_tokens_limit()));
  CHORUS_RETURN_IF_ERROR(range("max_latency_budget_ms", c.max_latency_budget_ms(), 1, int64_t{1} << 40));
  CHORUS_RETURN_IF_ERROR(range("default_latency_budget_ms", c.default_latency_budget_ms(), 1, c.max_latency_budget_ms()));
  CHORUS_RETURN_IF_ERROR(range("merge_reserve_ms", c.merge_reserve_ms(), 0, 60000));
  CHORUS_RETURN_IF_ERROR(range("max_queue_delay_ms", c.max_queue_delay_ms(), 0, 3600000));
  CHORUS_RETURN_IF_ERROR(range("deadline_margin_ms", c.deadline_margin_ms(), 0, 60000));
  CHORUS_RETURN_IF_ERROR(range("engine_stall_timeout_ms", c.engine_stall_timeout_ms(), 0, int64_t{1} << 32));
  CHORUS_RETURN_IF_ERROR(range("drain_timeout_ms", c.drain_timeout_ms(), 0, int64_t{1} << 32));
  CHORUS_RETURN_IF_ERROR(ValidateConnectionLimits(c));
  if (c.max_agents_per_request() > c.max_running_agents()) {
    return absl::InvalidArgumentError("config: max_agents_per_request exceeds max_running_agents");
  }
  if (c.backend() != "cpu" && c.backend() != "cuda") {
    return absl::InvalidArgumentError(StrCat("config: backend '", c.backend(), "' is not cpu or cuda"));
  }
  CHORUS_RETURN_IF_ERROR(range("tensor_parallel_size", c.tensor_parallel_size(), 1, 64));
  if (c.cuda_devices_size() > 0 && c.tensor_parallel_size() > 1 &&
      c.cuda_devices_size() != c.tensor_parallel_size()) {
    return absl::InvalidArgumentError(StrCat("config: tensor_parallel_size ", c.tensor_parallel_size(),
                                             " does not match the ", c.cuda_devices_size(), " cuda_devices"));
  }
  if (c.tls_cert_path().empty() != c.tls_key_path().empty()) {
    return absl::InvalidArgumentError("config: set both tls_cert_path and tls_key_path, or neither");
  }
  std::set<std::string> tenant_names;
  for (const auto& t : c.tenants()) {
    if (!ValidTenantName(t.name())) {
      return absl::InvalidArgumentError(StrCat("config: tenants name '", t.name(), "' is not 1..64 of [A-Za-z0-9._-]"));
    }
    if (!tenant_names.insert(t.name()).second) {
      return absl::InvalidArgumentError(StrCat("config: tenants '", t.name(), "' appears twice"));
    }
    const std::string at = StrCat("tenants[", t.name(), "].");
    if (t.has_max_priority()) CHORUS_RETURN_IF_ERROR(range(at + "max_priority", t.max_priority(), -100, 100));
    if (t.has_max_agents_per_request()) {
      CHORUS_RETURN_IF_ERROR(range(at + "max_agents_per_request", t.max_agents_per_request(), 1, 1 << 20));
    }
    if (t.has_max_inflight_agents()) CHORUS_RETURN_IF_ERROR(range(at + "max_inflight_agents", t.max_inflight_agents(), 1, 1 << 24));
    if (t.has_max_tokens_per_request()) {
      CHORUS_RETURN_IF_ERROR(range(at + "max_tokens_per_request", t.max_tokens_per_request(), 1, 1 << 24));
    }
  }
  if (!c.tenants().empty() && c.auth_token_path().empty()) {
    return absl::InvalidArgumentError("config: tenants need auth_token_path (\"TENANT TOKEN\" lines)");
  }
  if (c.listen_address().empty()) return absl::InvalidArgumentError("config: listen_address is empty");
  if (c.model_path().empty()) return absl::InvalidArgumentError("config: model_path is empty");
  return absl::OkStatus();
}

}  // namespace chorus

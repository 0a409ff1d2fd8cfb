// ServerConfig: the built-in defaults (the one source; configs/default.pbtxt spells out the same
// values), loading a text-format file over them, validation, and the CUDA switches.
#include <google/protobuf/text_format.h>

#include <cstdint>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <string_view>

#include "chorus/backends/cuda_backend.h"
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
  c.set_cpu_int8_activations(true);
  c.set_tensor_parallel_size(1);
  c.set_cuda_graphs(true);
  c.set_cuda_kv_cache_f16(true);
  c.set_cuda_dequant_cache(true);
  c.set_cuda_fuse(true);
  c.set_cuda_repack_weights(true);
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
    return absl::InvalidArgumentError(
        StrCat("config: ", path, " is not a valid ServerConfig text proto"));
  }
  CHORUS_RETURN_IF_ERROR(ValidateServerConfig(c));
  return c;
}

CudaBackendOptions CudaBackendOptionsFromConfig(const chorus::v1::ServerConfig& config) {
  // The environment can only turn a switch off (benchmarks); the config can too.
  CudaBackendOptions o = CudaBackendOptions::FromEnvironment();
  if (config.has_cuda_graphs()) o.graphs = o.graphs && config.cuda_graphs();
  if (config.has_cuda_dequant_cache()) {
    o.dequant_cache = o.dequant_cache && config.cuda_dequant_cache();
  }
  if (config.has_cuda_kv_cache_f16()) o.kv_f16 = o.kv_f16 && config.cuda_kv_cache_f16();
  if (config.has_cuda_fuse()) o.fuse = o.fuse && config.cuda_fuse();
  if (config.has_cuda_repack_weights()) o.repack = o.repack && config.cuda_repack_weights();
  return o;
}

namespace {

absl::Status Range(std::string_view field, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi) {
    return absl::InvalidArgumentError(
        StrCat("config: ", field, " = ", v, " is outside [", lo, ", ", hi, "]"));
  }
  return absl::OkStatus();
}

// Threads, KV cache, scheduler, queues, request limits and timeouts.
absl::Status ValidateServingLimits(const chorus::v1::ServerConfig& c) {
  CHORUS_RETURN_IF_ERROR(Range("num_threads", c.num_threads(), 0, 1024));
  CHORUS_RETURN_IF_ERROR(Range("kv_block_size_tokens", c.kv_block_size_tokens(), 1, 1024));
  CHORUS_RETURN_IF_ERROR(Range("kv_num_blocks", c.kv_num_blocks(), 1, 1 << 24));
  CHORUS_RETURN_IF_ERROR(Range("max_num_batched_tokens", c.max_num_batched_tokens(), 1, 1 << 20));
  CHORUS_RETURN_IF_ERROR(Range("max_running_agents", c.max_running_agents(), 1, 1 << 20));
  CHORUS_RETURN_IF_ERROR(Range("max_admission_bypass", c.max_admission_bypass(), 0, 1 << 20));
  CHORUS_RETURN_IF_ERROR(Range("max_queued_requests", c.max_queued_requests(), 0, 1 << 24));
  CHORUS_RETURN_IF_ERROR(Range("max_queued_agents", c.max_queued_agents(), 0, 1 << 24));
  CHORUS_RETURN_IF_ERROR(
      Range("max_concurrent_admissions", c.max_concurrent_admissions(), 1, 1 << 16));
  CHORUS_RETURN_IF_ERROR(Range("max_agents_per_request", c.max_agents_per_request(), 1, 1024));
  CHORUS_RETURN_IF_ERROR(Range("max_tokens_limit", c.max_tokens_limit(), 1, 1 << 24));
  CHORUS_RETURN_IF_ERROR(Range("max_prompt_bytes", c.max_prompt_bytes(), 1, 1 << 30));
  CHORUS_RETURN_IF_ERROR(
      Range("default_max_tokens", c.default_max_tokens(), 1, c.max_tokens_limit()));
  CHORUS_RETURN_IF_ERROR(
      Range("max_latency_budget_ms", c.max_latency_budget_ms(), 1, int64_t{1} << 40));
  CHORUS_RETURN_IF_ERROR(Range("default_latency_budget_ms", c.default_latency_budget_ms(), 1,
                               c.max_latency_budget_ms()));
  CHORUS_RETURN_IF_ERROR(Range("merge_reserve_ms", c.merge_reserve_ms(), 0, 60000));
  CHORUS_RETURN_IF_ERROR(Range("max_queue_delay_ms", c.max_queue_delay_ms(), 0, 3600000));
  CHORUS_RETURN_IF_ERROR(Range("deadline_margin_ms", c.deadline_margin_ms(), 0, 60000));
  CHORUS_RETURN_IF_ERROR(
      Range("engine_stall_timeout_ms", c.engine_stall_timeout_ms(), 0, int64_t{1} << 32));
  return Range("drain_timeout_ms", c.drain_timeout_ms(), 0, int64_t{1} << 32);
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
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_min_client_ping_interval_ms", c.grpc_min_client_ping_interval_ms(), 0, kDay));
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_max_connection_idle_ms", c.grpc_max_connection_idle_ms(), 0, 30 * kDay));
  CHORUS_RETURN_IF_ERROR(
      Range("grpc_max_connection_age_ms", c.grpc_max_connection_age_ms(), 0, 30 * kDay));
  CHORUS_RETURN_IF_ERROR(Range("grpc_max_connection_age_grace_ms",
                               c.grpc_max_connection_age_grace_ms(), 0, 30 * kDay));
  CHORUS_RETURN_IF_ERROR(Range("http_max_connections", c.http_max_connections(), 1, 4096));
  return Range("grpc_memory_quota_bytes", c.grpc_memory_quota_bytes(), 0, int64_t{1} << 40);
}

// backend, tensor_parallel_size and cuda_devices. The CUDA switches (cuda_graphs,
// cuda_kv_cache_f16, cuda_dequant_cache, cuda_fuse, cuda_repack_weights) take any value: each only
// turns a CUDA feature off, and the CPU backend ignores them.
absl::Status ValidateBackend(const chorus::v1::ServerConfig& c) {
  if (c.backend() != "cpu" && c.backend() != "cuda") {
    return absl::InvalidArgumentError(
        StrCat("config: backend '", c.backend(), "' is not cpu or cuda"));
  }
  CHORUS_RETURN_IF_ERROR(Range("tensor_parallel_size", c.tensor_parallel_size(), 1, 64));
  if (c.cuda_devices_size() > 0 && c.tensor_parallel_size() > 1 &&
      c.cuda_devices_size() != c.tensor_parallel_size()) {
    return absl::InvalidArgumentError(StrCat("config: tensor_parallel_size ",
                                             c.tensor_parallel_size(), " does not match the ",
                                             c.cuda_devices_size(), " cuda_devices"));
  }
  return absl::OkStatus();
}

// Tenant names (valid, unique), their limits, and the token file they need.
absl::Status ValidateTenants(const chorus::v1::ServerConfig& c) {
  std::set<std::string> tenant_names;
  for (const auto& t : c.tenants()) {
    if (!ValidTenantName(t.name())) {
      return absl::InvalidArgumentError(
          StrCat("config: tenants name '", t.name(), "' is not 1..64 of [A-Za-z0-9._-]"));
    }
    if (!tenant_names.insert(t.name()).second) {
      return absl::InvalidArgumentError(StrCat("config: tenants '", t.name(), "' appears twice"));
    }
    const std::string at = StrCat("tenants[", t.name(), "].");
    if (t.has_max_priority()) {
      CHORUS_RETURN_IF_ERROR(Range(at + "max_priority", t.max_priority(), -100, 100));
    }
    if (t.has_max_agents_per_request()) {
      CHORUS_RETURN_IF_ERROR(
          Range(at + "max_agents_per_request", t.max_agents_per_request(), 1, 1 << 20));
    }
    if (t.has_max_inflight_agents()) {
      CHORUS_RETURN_IF_ERROR(
          Range(at + "max_inflight_agents", t.max_inflight_agents(), 1, 1 << 24));
    }
    if (t.has_max_tokens_per_request()) {
      CHORUS_RETURN_IF_ERROR(
          Range(at + "max_tokens_per_request", t.max_tokens_per_request(), 1, 1 << 24));
    }
  }
  if (!c.tenants().empty() && c.auth_token_path().empty()) {
    return absl::InvalidArgumentError(
        "config: tenants need auth_token_path (\"TENANT TOKEN\" lines)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateServerConfig(const chorus::v1::ServerConfig& c) {
  CHORUS_RETURN_IF_ERROR(ValidateServingLimits(c));
  CHORUS_RETURN_IF_ERROR(ValidateConnectionLimits(c));
  if (c.max_agents_per_request() > c.max_running_agents()) {
    return absl::InvalidArgumentError("config: max_agents_per_request exceeds max_running_agents");
  }
  CHORUS_RETURN_IF_ERROR(ValidateBackend(c));
  if (c.tls_cert_path().empty() != c.tls_key_path().empty()) {
    return absl::InvalidArgumentError(
        "config: set both tls_cert_path and tls_key_path, or neither");
  }
  CHORUS_RETURN_IF_ERROR(ValidateTenants(c));
  if (c.listen_address().empty()) {
    return absl::InvalidArgumentError("config: listen_address is empty");
  }
  if (c.model_path().empty()) return absl::InvalidArgumentError("config: model_path is empty");
  return absl::OkStatus();
}

}  // namespace chorus

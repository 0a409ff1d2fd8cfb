#include "grpc_limits.h"

#include <grpcpp/resource_quota.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace chorus::server {
namespace {

int Clamp(int64_t v) {
  return static_cast<int>(std::min<int64_t>(v, std::numeric_limits<int>::max()));
}

}  // namespace

void ApplyConnectionLimits(const chorus::v1::ServerConfig& c, grpc::ServerBuilder* builder) {
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, c.grpc_max_concurrent_streams());
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Clamp(c.grpc_keepalive_time_ms()));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Clamp(c.grpc_keepalive_timeout_ms()));
  // Enforcement: pings more frequent than this without data are strikes; 2 strikes: GOAWAY.
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              Clamp(c.grpc_min_client_ping_interval_ms()));
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
  if (c.grpc_max_connection_idle_ms() > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                                Clamp(c.grpc_max_connection_idle_ms()));
  }
  if (c.grpc_max_connection_age_ms() > 0) {
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                                Clamp(c.grpc_max_connection_age_ms()));
    builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
                                Clamp(c.grpc_max_connection_age_grace_ms()));
  }
  // A request carries at most max_prompt_bytes of prompt plus small fields.
  builder->SetMaxReceiveMessageSize(Clamp(int64_t{c.max_prompt_bytes()} + (1 << 20)));
  if (c.grpc_memory_quota_bytes() > 0) {
    grpc::ResourceQuota quota("chorusd");
    quota.Resize(static_cast<size_t>(c.grpc_memory_quota_bytes()));
    builder->SetResourceQuota(quota);
  }
}

}  // namespace chorus::server

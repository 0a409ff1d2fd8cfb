// gRPC server options from ServerConfig (internal to server/): per-connection limits on
// concurrent streams, keepalive and its enforcement, idle and age, the largest request
// message, and an optional memory quota (issue 11, finding 1).
#pragma once

#include <grpcpp/grpcpp.h>

#include "chorus/v1/config.pb.h"

namespace chorus::server {

void ApplyConnectionLimits(const chorus::v1::ServerConfig& config, grpc::ServerBuilder* builder);

}  // namespace chorus::server

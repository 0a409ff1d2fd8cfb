// The `chorus` client: shared pieces of its subcommands. Depends on the generated gRPC code
// only (no server or engine code).
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <set>
#include <string>

#include "../tools/flags.h"
#include "chorus/v1/chorus.grpc.pb.h"

namespace chorus::client {

// A channel to --addr (TLS with --tls / --tls-ca / --tls-server-name) and the bearer token of
// --auth-token-file, which Prepare adds to every call.
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::string auth;  // "Bearer <token>" or empty
  void Prepare(grpc::ClientContext* ctx) const {
    if (!auth.empty()) ctx->AddMetadata("authorization", auth);
  }
};
bool Connect(const tools::Flags& flags, Connection* out, std::string* error);
// Connection flags with values (every subcommand), and the --tls switch.
std::set<std::string> ConnectionFlags();
// Fills a GenerateRequest from the common flags (--agents, --merge, --budget-ms, ...).
// Returns false with *error naming the flag.
bool BuildRequest(const tools::Flags& flags, const std::string& prompt,
                  chorus::v1::GenerateRequest* req, std::string* error);
// Flags every generating subcommand accepts.
std::set<std::string> RequestFlags();
int RunBench(int argc, char** argv);

}  // namespace chorus::client

// Front-end hardening for a shared server (issue 11): bearer tokens checked in constant time
// and mapped to identities (the runtime namespaces request ids per identity), unguessable
// request ids, and model names that never reveal file paths. No gRPC here; thread-safe
// (const after setup).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace chorus {

// Equality whose running time depends on the lengths only, never on where the bytes differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// The bearer tokens of auth_token_path: one per line (blank lines and lines starting with '#'
// ignored; surrounding whitespace trimmed). A line "TOKEN" is the identity "token-i" (the i-th
// token line, from 1); a line "TENANT TOKEN" is the identity TENANT, whose limits come from the
// config's `tenants` (several tokens may share a tenant). Logs, ownership and per-tenant
// metrics use the identity, never the token.
class TokenAuth {
 public:
  TokenAuth() = default;  // auth off: every caller is the anonymous identity ""
  static absl::StatusOr<TokenAuth> Parse(std::string_view file_contents);

  bool enabled() const { return !tokens_.empty(); }
  // Whether some token maps to `identity` ("token-3", or a tenant's name).
  bool HasIdentity(std::string_view identity) const;
  // The identity for the value of the "authorization" metadata ("Bearer <token>"), or
  // UNAUTHENTICATED. Compares against every token in constant time per token.
  absl::StatusOr<std::string> Identify(std::string_view authorization) const;

 private:
  std::vector<std::string> tokens_;
  std::vector<std::string> names_;  // identity of each token
};

// 1..64 bytes of [A-Za-z0-9._-].
bool ValidTenantName(std::string_view name);

// 32 lowercase hex digits (128 bits from the kernel's CSPRNG): a server-assigned request id.
std::string NewRequestId();

// What ListModels reports: general.name when set, else the file (or model directory) name
// without its directories and without ".gguf" (configuration paths never reach clients).
std::string ModelDisplayName(std::string_view general_name, std::string_view model_path);

}  // namespace chorus

// Reading a small secret or certificate file (TLS certificate, key or CA bundle, bearer-token
// file) for the server and the client alike: the whole file, refused past a size cap so that a
// wrong path (a device, a model file) fails with a clear error instead of reading gigabytes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace chorus {

inline constexpr int64_t kMaxSecretFileBytes = 1 << 20;

// The file's bytes; NOT_FOUND when it cannot be opened, INVALID_ARGUMENT when it is larger
// than `max_bytes`. Messages name the path.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path,
                                           int64_t max_bytes = kMaxSecretFileBytes);

}  // namespace chorus

// JSON helpers for the Hugging Face loader (nlohmann-json): parsing that refuses duplicate
// object keys (JSON libraries keep one silently, so two readers could disagree about a file),
// and typed field access whose errors name the file and the key.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace chorus::hf {

using Json = nlohmann::json;

// Parses `text`; `what` (a file name) prefixes every error. INVALID_ARGUMENT on bad JSON.
absl::StatusOr<Json> ParseJson(std::string_view text, std::string_view what);
// Reads and parses a file of at most `max_bytes`; NOT_FOUND when it does not exist.
absl::StatusOr<Json> ReadJsonFile(const std::string& path, uint64_t max_bytes = 1ull << 30);
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, uint64_t max_bytes);

// obj[key] as an integer in [min, max] / a number / a string / a bool. Missing keys are
// INVALID_ARGUMENT naming `what` and the key; present keys of the wrong type too.
absl::StatusOr<int64_t> GetInt(const Json& obj, std::string_view key, int64_t min, int64_t max,
                               std::string_view what);
absl::StatusOr<double> GetNumber(const Json& obj, std::string_view key, std::string_view what);
absl::StatusOr<std::string> GetString(const Json& obj, std::string_view key, std::string_view what);
absl::StatusOr<bool> GetBool(const Json& obj, std::string_view key, std::string_view what);
// A value for an error message, cut to 80 characters.
std::string ShortJson(const Json& v);
// True when obj has `key` with a non-null value.
bool Has(const Json& obj, std::string_view key);

}  // namespace chorus::hf

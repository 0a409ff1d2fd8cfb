#include "chorus/server/security.h"

#include <sys/random.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile uint8_t diff = 0;  // volatile: no early exit once a difference is known
  for (size_t i = 0; i < a.size(); ++i) {
    diff = diff | static_cast<uint8_t>(a[i] ^ b[i]);
  }
  return diff == 0;
}

absl::StatusOr<TokenAuth> TokenAuth::Parse(std::string_view text) {
  TokenAuth auth;
  size_t line = 0;
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view t = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view() : text.substr(eol + 1);
    ++line;
    while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
    while (!t.empty() && (t.back() == ' ' || t.back() == '\t' || t.back() == '\r')) {
      t.remove_suffix(1);
    }
    if (t.empty() || t.front() == '#') continue;
    // "TOKEN" (identity token-i) or "TENANT TOKEN" (identity TENANT; a tenant may have several).
    std::string name;
    const size_t sep = t.find_first_of(" \t");
    if (sep != std::string_view::npos) {
      name = std::string(t.substr(0, sep));
      t.remove_prefix(sep);
      while (!t.empty() && (t.front() == ' ' || t.front() == '\t')) t.remove_prefix(1);
      if (!ValidTenantName(name)) {
        return absl::InvalidArgumentError(StrCat("config: auth_token_path line ", line,
                                                 ": a tenant name is 1..64 of [A-Za-z0-9._-]"));
      }
    }
    for (char c : t) {
      if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
        return absl::InvalidArgumentError(
            StrCat("config: auth_token_path line ", line,
                   ": a line is TOKEN or TENANT TOKEN, a token printable ASCII without spaces"));
      }
    }
    auth.tokens_.emplace_back(t);
    auth.names_.push_back(name.empty() ? StrCat("token-", auth.tokens_.size()) : name);
  }
  if (auth.tokens_.empty()) {
    return absl::InvalidArgumentError("config: auth_token_path holds no token");
  }
  return auth;
}

absl::StatusOr<std::string> TokenAuth::Identify(std::string_view authorization) const {
  constexpr std::string_view kBearer = "Bearer ";
  const bool bearer = authorization.substr(0, kBearer.size()) == kBearer;
  const std::string_view token = bearer ? authorization.substr(kBearer.size()) : "";
  size_t match = 0;  // 1 + index of the matching token; every token is compared
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (ConstantTimeEquals(token, tokens_[i]) && match == 0) match = i + 1;
  }
  if (!bearer || match == 0) {
    return absl::UnauthenticatedError("missing or wrong authorization bearer token");
  }
  return names_[match - 1];
}

bool TokenAuth::HasIdentity(std::string_view identity) const {
  return std::find(names_.begin(), names_.end(), identity) != names_.end();
}

bool ValidTenantName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

std::string NewRequestId() {
  uint8_t bytes[16];
  size_t got = 0;
  while (got < sizeof(bytes)) {
    const ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
    if (n < 0 && errno == EINTR) continue;
    CHORUS_CHECK(n > 0);  // getrandom on Linux >= 3.17 does not fail once the pool is seeded
    got += static_cast<size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id;
  for (uint8_t b : bytes) {
    id.push_back(kHex[b >> 4]);
    id.push_back(kHex[b & 15]);
  }
  return id;
}

std::string ModelDisplayName(std::string_view general_name, std::string_view model_path) {
  if (!general_name.empty()) return std::string(general_name);
  while (model_path.size() > 1 && model_path.back() == '/') model_path.remove_suffix(1);
  const size_t slash = model_path.find_last_of('/');
  std::string_view base =
      slash == std::string_view::npos ? model_path : model_path.substr(slash + 1);
  constexpr std::string_view kGguf = ".gguf";
  if (base.size() > kGguf.size() && base.substr(base.size() - kGguf.size()) == kGguf) {
    base.remove_suffix(kGguf.size());
  }
  return std::string(base);
}

}  // namespace chorus

// Helpers shared by runtime.cc (the engine loop) and requests.cc (entry points and request
// completion). Internal to src/runtime/.
#pragma once

#include <cstdint>
#include <exception>
#include <new>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "chorus/core/request.h"
#include "chorus/core/str_cat.h"

namespace chorus::runtime_internal {

// Request ids are unique per owner: the runtime keys them by owner and id ('\n' never
// appears in a validated id).
inline std::string LiveKey(std::string_view owner, std::string_view request_id) {
  return StrCat(owner, "\n", request_id);
}
inline std::string LiveKey(const GenerateParams& p) { return LiveKey(p.owner, p.request_id); }

// Tokens in the group's drafts (what Stats.tokens_generated and the Prometheus counter count).
inline int64_t DraftTokens(const RequestGroup& g) {
  int64_t n = 0;
  for (const auto& a : g.agents) n += a.draft.num_tokens;
  return n;
}

inline absl::Status FromException(const std::exception& e, std::string_view where) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
    return absl::ResourceExhaustedError(StrCat(where, ": out of memory (", e.what(), ")"));
  }
  return absl::InternalError(StrCat(where, " threw: ", e.what()));
}

}  // namespace chorus::runtime_internal

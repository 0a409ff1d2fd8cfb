// Status helpers: Abseil 20220623 (Debian 12) ships no status macros, so these are ours.
//
//   CHORUS_RETURN_IF_ERROR(expr);            // returns the status when !ok()
//   CHORUS_ASSIGN_OR_RETURN(auto x, expr);   // unwraps a StatusOr or returns its status
#pragma once

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CHORUS_STATUS_CONCAT_INNER(a, b) a##b
#define CHORUS_STATUS_CONCAT(a, b) CHORUS_STATUS_CONCAT_INNER(a, b)

#define CHORUS_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status chorus_status_ = (expr);          \
    if (!chorus_status_.ok()) return chorus_status_; \
  } while (0)

#define CHORUS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(*tmp)

#define CHORUS_ASSIGN_OR_RETURN(lhs, expr) \
  CHORUS_ASSIGN_OR_RETURN_IMPL(CHORUS_STATUS_CONCAT(chorus_statusor_, __LINE__), lhs, expr)

// Broken internal invariant (a bug, never bad input): print and abort.
#define CHORUS_CHECK(cond)                                                                 \
  do {                                                                                     \
    if (!(cond)) {                                                                         \
      std::fprintf(stderr, "%s:%d: CHORUS_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                        \
    }                                                                                      \
  } while (0)

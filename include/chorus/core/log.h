// Named loggers, one per module ("server", "http", "runtime", ...): each line carries the
// module's name, and request lines start with the request id in brackets, e.g.
//   [2026-12-02 03:00:00.123] [runtime] [warning] [req-42] failed: ...
// A module logger is a clone of spdlog's default logger (same sinks, same level at creation),
// registered so that spdlog::set_level reaches it. Thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>

namespace chorus {

std::shared_ptr<spdlog::logger> ModuleLogger(const char* name);

}  // namespace chorus

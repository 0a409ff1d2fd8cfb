#include "chorus/core/log.h"

#include "chorus/core/mutex.h"

namespace chorus {

std::shared_ptr<spdlog::logger> ModuleLogger(const char* name) {
  static Mutex mu;
  MutexLock lock(&mu);
  if (auto l = spdlog::get(name)) return l;
  auto l = spdlog::default_logger()->clone(name);
  spdlog::register_logger(l);
  return l;
}

}  // namespace chorus

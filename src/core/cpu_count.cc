#include "chorus/core/cpu_count.h"

#include <sched.h>

#include <charconv>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

namespace chorus {
namespace {

std::string ReadSmall(const char* path) {
  std::ifstream in(path);
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str().substr(0, 256);
}

std::optional<double> ParseNumber(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  double v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr == s.data()) return std::nullopt;
  return v;
}

}  // namespace

std::optional<double> CgroupCpuLimit(std::string_view v2_cpu_max, std::string_view v1_quota,
                                     std::string_view v1_period) {
  if (!v2_cpu_max.empty()) {
    const size_t space = v2_cpu_max.find(' ');
    if (space == std::string_view::npos || v2_cpu_max.substr(0, 3) == "max") return std::nullopt;
    auto quota = ParseNumber(v2_cpu_max.substr(0, space));
    auto period = ParseNumber(v2_cpu_max.substr(space + 1));
    if (!quota || !period || *quota <= 0 || *period <= 0) return std::nullopt;
    return *quota / *period;
  }
  auto quota = ParseNumber(v1_quota);
  auto period = ParseNumber(v1_period);
  if (!quota || !period || *quota <= 0 || *period <= 0) return std::nullopt;  // -1: no limit
  return *quota / *period;
}

int AvailableCpus() {
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) cpus = CPU_COUNT(&set);
  const auto limit = CgroupCpuLimit(ReadSmall("/sys/fs/cgroup/cpu.max"),
                                    ReadSmall("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                                    ReadSmall("/sys/fs/cgroup/cpu/cpu.cfs_period_us"));
  if (limit) cpus = std::min(cpus, static_cast<int>(std::ceil(*limit - 1e-9)));
  return std::max(1, cpus);
}

}  // namespace chorus

// How many CPUs this process may use: the affinity mask, capped by the cgroup CPU quota
// (cgroup v2 cpu.max, or v1 cpu.cfs_quota_us / cpu.cfs_period_us), rounded up, at least 1.
// A container limited to 2 CPUs on a 64-core host gets 2, not hardware_concurrency()'s 64.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace chorus {

int AvailableCpus();

// The quota in CPUs from the files' contents (for tests): cgroup v2 "max 100000" or
// "200000 100000"; v1 quota "-1" / "150000" with period "100000". nullopt: no limit.
std::optional<double> CgroupCpuLimit(std::string_view v2_cpu_max, std::string_view v1_quota,
                                     std::string_view v1_period);

}  // namespace chorus

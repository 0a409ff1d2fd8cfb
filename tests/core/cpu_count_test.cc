#include <thread>
// Threads for num_threads 0: the cgroup CPU quota caps the affinity count (issue 16).
#include <gtest/gtest.h>

#include "chorus/core/cpu_count.h"

namespace chorus {
namespace {

TEST(CpuCount, CgroupV2Quota) {
  EXPECT_EQ(CgroupCpuLimit("max 100000\n", "", ""), std::nullopt);
  EXPECT_DOUBLE_EQ(*CgroupCpuLimit("200000 100000\n", "", ""), 2.0);
  EXPECT_DOUBLE_EQ(*CgroupCpuLimit("150000 100000", "", ""), 1.5);
  EXPECT_EQ(CgroupCpuLimit("garbage", "", ""), std::nullopt);
}

TEST(CpuCount, CgroupV1Quota) {
  EXPECT_EQ(CgroupCpuLimit("", "-1\n", "100000\n"), std::nullopt);
  EXPECT_DOUBLE_EQ(*CgroupCpuLimit("", "400000\n", "100000\n"), 4.0);
  EXPECT_EQ(CgroupCpuLimit("", "", ""), std::nullopt);
  EXPECT_EQ(CgroupCpuLimit("", "100000", "0"), std::nullopt);
}

TEST(CpuCount, AvailableIsPositiveAndAtMostTheMachine) {
  const int n = AvailableCpus();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace
}  // namespace chorus

// NCCL communicators (CUDA builds with NCCL): one rank per listed GPU, in this process.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/backends/communicator.h"

namespace chorus {

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclCommunicators(
    const std::vector<int>& devices);

}  // namespace chorus

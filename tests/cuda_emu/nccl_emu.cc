// NCCL on the emulator: device memory is host memory, so the in-process CPU communicator (threads
// as ranks) stands in for the NCCL all-reduce.
#include "chorus/backends/nccl_communicator.h"
#include "chorus/backends/communicator.h"

namespace chorus {

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclCommunicators(
    const std::vector<int>& devices) {
  if (devices.empty()) return absl::InvalidArgumentError("nccl: no devices given");
  return CreateCpuCommunicators(static_cast<int>(devices.size()));
}

}  // namespace chorus

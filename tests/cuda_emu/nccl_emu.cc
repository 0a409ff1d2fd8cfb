// NCCL on the emulator: device memory is host memory, so the in-process CPU communicator (threads
// as ranks) stands in for the NCCL all-reduce. Like NCCL it enqueues on a stream: the emulator's
// streams run in order at once, so the sum runs now, or is recorded into the graph while a stream
// is being captured (and runs at every replay). A failure inside a replay (the group aborted)
// shows up as a launch error, as a failed kernel would.
#include <memory>
#include <utility>

#include "chorus/backends/communicator.h"
#include "chorus/backends/nccl_communicator.h"
#include "cuda_runtime.h"

namespace chorus {
namespace {

class EmuNccl : public Communicator {
 public:
  explicit EmuNccl(std::unique_ptr<Communicator> cpu) : cpu_(std::move(cpu)) {}
  int rank() const override { return cpu_->rank(); }
  int world_size() const override { return cpu_->world_size(); }
  absl::Status AllReduceSum(float* data, int64_t count) override {
    return cpu_->AllReduceSum(data, count);
  }
  void Abort() override { cpu_->Abort(); }
  bool EnqueuesOnStream() const override { return true; }
  bool Aborted() const override { return cpu_->Aborted(); }
  absl::Status EnqueueAllReduceSum(float* data, int64_t count, void*) override {
    if (!emu::Capturing()) return cpu_->AllReduceSum(data, count);
    Communicator* cpu = cpu_.get();
    emu::CaptureGraph()->ops.push_back([=] {
      if (!cpu->AllReduceSum(data, count).ok()) emu::LastError() = 719;  // cudaErrorLaunchFailure
    });
    return absl::OkStatus();
  }

 private:
  std::unique_ptr<Communicator> cpu_;
};

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<Communicator>>> CreateNcclCommunicators(
    const std::vector<int>& devices) {
  if (devices.empty()) return absl::InvalidArgumentError("nccl: no devices given");
  std::vector<std::unique_ptr<Communicator>> out;
  for (auto& c : CreateCpuCommunicators(static_cast<int>(devices.size()))) {
    out.push_back(std::make_unique<EmuNccl>(std::move(c)));
  }
  return out;
}

}  // namespace chorus

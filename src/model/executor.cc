#include "chorus/model/executor.h"

#include "chorus/core/status.h"

namespace chorus {
namespace {

class SingleDeviceExecutor : public ForwardExecutor {
 public:
  SingleDeviceExecutor(const Model* model, Backend* backend, std::unique_ptr<KvCache> kv)
      : kv_(std::move(kv)), transformer_(model, backend, kv_.get()) {}
  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits) override {
    return transformer_.Forward(batch, logits);
  }
  absl::Status ForwardSampled(const ForwardBatch& batch, const std::vector<RowSampling>& draws,
                              const std::vector<int32_t>& host_rows,
                              std::vector<float>* host_logits,
                              std::vector<SampledToken>* sampled) override {
    return transformer_.ForwardSampled(batch, draws, host_rows, host_logits, sampled);
  }
  void CopyKvBlock(int32_t src, int32_t dst) override { kv_->CopyBlock(src, dst); }

 private:
  std::unique_ptr<KvCache> kv_;
  Transformer transformer_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ForwardExecutor>> CreateSingleDeviceExecutor(const Model* model,
                                                                            Backend* backend,
                                                                            int num_blocks,
                                                                            int block_size) {
  CHORUS_ASSIGN_OR_RETURN(auto kv,
                          KvCache::Create(backend, model->config(), num_blocks, block_size));
  return std::unique_ptr<ForwardExecutor>(new SingleDeviceExecutor(model, backend, std::move(kv)));
}

}  // namespace chorus

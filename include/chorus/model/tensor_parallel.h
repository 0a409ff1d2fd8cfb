// Megatron-style tensor parallelism over `world` ranks, each with its own backend, KV cache
// and Communicator: Q/K/V and gate/up are split by output rows (heads and FFN columns),
// attention output and down by input columns, and the partial sums of the latter two are
// all-reduced; embeddings, norms and the output head are replicated. Requires heads, KV heads
// and FFN width divisible by `world` (and the column slices by the quantization block).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/backends/communicator.h"
#include "chorus/model/executor.h"
#include "chorus/model/model.h"
#include "chorus/model/transformer.h"

namespace chorus {

// One rank's slice of a model's weights, loaded into that rank's backend.
class ModelShard {
 public:
  static absl::StatusOr<std::unique_ptr<ModelShard>> Create(const Model& model, int rank, int world,
                                                            Backend* backend);
  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }

 private:
  ModelShard() = default;
  ModelConfig config_;
  ModelWeights weights_;
  std::vector<std::string> storage_;  // sliced host bytes (the CPU backend points into them)
};

// Runs every rank of a forward pass on its own thread; returns rank 0's logits or samples (all
// ranks compute the same replicated head). Not thread-safe: one caller.
class TensorParallelRunner : public ForwardExecutor {
 public:
  // backends[r] and comms[r] belong to rank r; the backends and the model must outlive it.
  static absl::StatusOr<std::unique_ptr<TensorParallelRunner>> Create(
      const Model& model, std::vector<Backend*> backends,
      std::vector<std::unique_ptr<Communicator>> comms, int kv_blocks, int block_size);
  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits) override;
  absl::Status ForwardSampled(const ForwardBatch& batch, const std::vector<RowSampling>& draws,
                              const std::vector<int32_t>& host_rows,
                              std::vector<float>* host_logits,
                              std::vector<SampledToken>* sampled) override;
  void CopyKvBlock(int32_t src, int32_t dst) override {
    for (auto& r : ranks_) r.kv->CopyBlock(src, dst);
  }
  int world_size() const { return static_cast<int>(ranks_.size()); }

 private:
  struct Rank {
    std::unique_ptr<ModelShard> shard;
    std::unique_ptr<KvCache> kv;
    std::unique_ptr<Communicator> comm;
    std::unique_ptr<Transformer> transformer;
    std::vector<float> logits;
  };
  // Runs `rank0` on rank 0 and a plain forward on the other ranks, each on its own thread.
  absl::Status RunAll(const ForwardBatch& batch,
                      const std::function<absl::Status(Transformer&)>& rank0);
  std::vector<Rank> ranks_;
};

}  // namespace chorus

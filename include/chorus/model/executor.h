// ForwardExecutor: what the engine runs a step on. One device (a Transformer over one backend
// and its KV cache) or several tensor-parallel ranks (TensorParallelRunner); the engine and the
// agents do not need to know which. Engine thread only.
#pragma once

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/model/transformer.h"

namespace chorus {

class ForwardExecutor {
 public:
  virtual ~ForwardExecutor() = default;
  // All logits to the host: [logit_rows.size(), vocab].
  virtual absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits) = 0;
  // Samples `draws` where the logits are and copies only `host_rows` to the host (see
  // Transformer::ForwardSampled).
  virtual absl::Status ForwardSampled(const ForwardBatch& batch,
                                      const std::vector<RowSampling>& draws,
                                      const std::vector<int32_t>& host_rows,
                                      std::vector<float>* host_logits,
                                      std::vector<SampledToken>* sampled) = 0;
  // Copies KV block src into dst on every device (copy-on-write at a fork).
  virtual void CopyKvBlock(int32_t src, int32_t dst) = 0;
};

// A single backend: owns the KV cache (num_blocks x block_size tokens) and the transformer.
absl::StatusOr<std::unique_ptr<ForwardExecutor>> CreateSingleDeviceExecutor(const Model* model,
                                                                            Backend* backend,
                                                                            int num_blocks,
                                                                            int block_size);

}  // namespace chorus

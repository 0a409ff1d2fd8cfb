// The transformer forward pass (llama / qwen2) over Backend ops, batched: one call runs many
// sequences, each at its own positions, reading and writing the paged KV cache.
//
// Per layer:  h = x + Wo * Attn(RoPE(Wq n1(x) [+bq]), RoPE(Wk n1(x) [+bk]), Wv n1(x) [+bv])
//             x = h + Wdown * (silu(Wgate n2(h)) * Wup n2(h))
// logits = Woutput * n_out(x) for the requested rows only.
// Not thread-safe: one engine thread calls Forward.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "chorus/backends/backend.h"
#include "chorus/model/kv_cache.h"
#include "chorus/model/model.h"

namespace chorus {

// One forward call. Token i of the batch is tokens[i] at positions[i] of sequence
// seq_of_token[i]; sequence s owns the blocks block_tables[s * max_blocks_per_seq ...].
struct ForwardBatch {
  std::vector<int32_t> tokens;        // [num_tokens]
  std::vector<int32_t> positions;     // [num_tokens]
  std::vector<int32_t> seq_of_token;  // [num_tokens]
  std::vector<int32_t> block_tables;  // [num_seqs, max_blocks_per_seq]
  int max_blocks_per_seq = 0;
  std::vector<int32_t> logit_rows;  // batch rows whose logits are wanted
};

class Communicator;

class Transformer {
 public:
  // `model`, `backend` and `kv` must outlive the transformer.
  Transformer(const Model* model, Backend* backend, KvCache* kv);
  // One tensor-parallel rank: `config` has this rank's heads and FFN width, `weights` its
  // shards (column-parallel QKV and gate/up, row-parallel output and down); after each
  // row-parallel matmul the partial sums are all-reduced through `comm`. Everything must
  // outlive the transformer.
  Transformer(const ModelConfig* config, const ModelWeights* weights, Backend* backend, KvCache* kv,
              Communicator* comm);

  // Runs the batch; writes logits [logit_rows.size(), vocab] to `logits` (host). INVALID_ARGUMENT
  // when the batch is inconsistent (ids, positions or blocks out of range): never a crash.
  absl::Status Forward(const ForwardBatch& batch, std::vector<float>* logits);
  // The same forward, but the logits stay in backend memory: `draws` (RowSampling::row indexes
  // logit_rows) are sampled there, one SampledToken each, and only the logit_rows indices in
  // `host_rows` come to the host, as [host_rows.size(), vocab].
  absl::Status ForwardSampled(const ForwardBatch& batch, const std::vector<RowSampling>& draws,
                              const std::vector<int32_t>& host_rows,
                              std::vector<float>* host_logits, std::vector<SampledToken>* sampled);

 private:
  // Runs the batch up to the logits of logit_rows, left in logits_.
  absl::Status Run(const ForwardBatch& batch);
  absl::Status Validate(const ForwardBatch& batch) const;
  absl::Status EnsureScratch(int num_tokens);
  absl::Status AllReduce(float* data, int64_t count);

  const ModelConfig* config_;
  const ModelWeights* weights_;
  Communicator* comm_ = nullptr;  // null: a single rank
  Backend* backend_;
  KvCache* kv_;
  int scratch_tokens_ = 0;
  // Activations in backend memory, sized for scratch_tokens_ rows.
  std::unique_ptr<BackendBuffer> x_, xn_, q_, k_, v_, att_, proj_, gate_, up_, logits_;
};

}  // namespace chorus

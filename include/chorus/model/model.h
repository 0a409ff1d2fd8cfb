// A loaded model: the GGUF file (kept mapped), its hyperparameters, tokenizer and weights as
// backend tensors. Every tensor the architecture needs is checked for presence, type support
// and shape before the model is returned, and every tensor in the file must be one the model
// uses (or on a short list known to be safe to ignore): an unknown tensor is refused by name.
// Immutable after Load; the backend must outlive it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/gguf/gguf.h"
#include "chorus/model/hparams.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {

struct LayerWeights {
  WeightTensor attn_norm;       // [dim]
  WeightTensor wq, wk, wv;      // [q_dim, dim], [kv_dim, dim], [kv_dim, dim]
  WeightTensor bq, bk, bv;      // qwen2 only: [q_dim], [kv_dim], [kv_dim]
  WeightTensor q_norm, k_norm;  // qwen3 only: [head_dim] each, RMSNorm per head before RoPE
  WeightTensor wo;              // [dim, q_dim]
  WeightTensor ffn_norm;        // [dim]
  WeightTensor gate, up;        // [ffn, dim]
  WeightTensor down;            // [dim, ffn]
};

struct ModelWeights {
  WeightTensor token_embd;   // [vocab, dim]
  WeightTensor output_norm;  // [dim]
  WeightTensor output;       // [vocab, dim]; token_embd when tied
  WeightTensor rope_freqs;   // [rope_dim / 2] F32 divisors (Llama 3.x), data null when absent
  std::vector<LayerWeights> layers;
};

class Model {
 public:
  // `path` is a GGUF file, or a Hugging Face directory (config.json, safetensors, tokenizer.json;
  // chorus/hf/hf_model.h) converted in memory.
  static absl::StatusOr<std::unique_ptr<Model>> Load(const std::string& path, Backend* backend);
  // For tests: a model from an already-open file.
  static absl::StatusOr<std::unique_ptr<Model>> FromFile(std::unique_ptr<GgufFile> file,
                                                         Backend* backend);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const GgufFile& file() const { return *file_; }

 private:
  Model() = default;
  std::unique_ptr<GgufFile> file_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelWeights weights_;
};

}  // namespace chorus

// Model hyperparameters read from GGUF metadata ("{arch}.*" keys), validated against limits so
// that later size arithmetic cannot overflow.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "chorus/backends/backend.h"
#include "chorus/gguf/gguf.h"

namespace chorus {

struct ModelConfig {
  std::string arch;         // "llama", "qwen2" or "qwen3"
  int dim = 0;              // embedding_length
  int n_layers = 0;         // block_count
  int n_heads = 0;          // attention.head_count
  int n_kv_heads = 0;       // attention.head_count_kv (GQA when < n_heads)
  int head_dim = 0;         // attention.key_length, default dim / n_heads
  int ffn_dim = 0;          // feed_forward_length
  int vocab_size = 0;       // rows of token_embd.weight
  int context_length = 0;   // context_length (positions supported)
  int rope_dim = 0;         // rope.dimension_count (default head_dim)
  float norm_eps = 1e-5f;   // attention.layer_norm_rms_epsilon
  float rope_base = 10000;  // rope.freq_base
  // Linear rope scaling: 1 / rope.scaling.factor when rope.scaling.type = "linear", else 1.
  float rope_freq_scale = 1.0f;
  RopeStyle rope_style = RopeStyle::kAdjacentPairs;
  bool qkv_bias = false;  // qwen2
  bool qk_norm = false;   // qwen3: per-head RMSNorm of q and k (attn_q_norm / attn_k_norm)

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
};

// Reads and validates the hyperparameters. Strict: an unknown architecture, and any
// "{arch}.*" metadata key that would change the math but is not implemented here (rope scaling
// other than linear, sliding window, softcapping, experts, ...), is FAILED_PRECONDITION naming
// the key; nothing is loaded and silently ignored.
absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& file);

// Architectures ReadModelConfig accepts, for error messages and docs.
inline constexpr const char* kSupportedArchitectures = "llama, qwen2, qwen3";

}  // namespace chorus

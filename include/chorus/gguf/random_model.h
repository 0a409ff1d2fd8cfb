// Random-weight GGUF models of any llama/qwen2/qwen3 shape and weight type, deterministic from a
// seed; for tests and benchmarks (no model is ever downloaded). The vocabulary is copied from
// another GGUF file (all tokenizer.* keys) or synthesized (SentencePiece-style: <unk>, <s>,
// </s>, 256 byte tokens, then unused filler tokens).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/gguf/gguf.h"
#include "chorus/gguf/gguf_writer.h"

namespace chorus {

struct RandomModelSpec {
  std::string arch = "llama";  // "llama", "qwen2" or "qwen3" (per-head q/k norms, no biases)
  int dim = 64;
  int n_layers = 2;
  int n_heads = 4;
  int n_kv_heads = 2;
  int ffn_dim = 128;
  int vocab_size = 512;  // ignored when vocab_from is given
  int context_length = 2048;
  float rope_base = 10000.0f;
  GgmlType weight_type = GgmlType::kF32;  // 2-D weights; norms and biases stay F32
  // "_M" K-quant mix (as Q4_K_M / Q5_K_M files are made): token_embd, output and the attn_v
  // and ffn_down of the first and last eighth of the layers and every third layer between
  // are Q6_K; everything else weight_type.
  bool k_mix = false;
  bool tied_output = false;
  uint64_t seed = 1;
  int head_dim = 0;  // 0: dim / n_heads; else written as attention.key_length/value_length
  // rope_freqs.weight by the Llama 3.1 rule (factor 32, low/high frequency factors 1/4,
  // original context 8192, as Llama 3.x GGUF files store it).
  bool rope_freqs = false;
  float rope_linear_factor = 0;  // > 0: rope.scaling.type "linear" with this factor
};

// Fills `writer` with the model. vocab_from may be null.
// The Llama 3.1 rope_freqs divisors for pairs of a rope_dim-wide rotation at `base`.
std::vector<float> Llama3RopeFreqs(int rope_dim, float base, float factor = 32.0f,
                                   float low_freq_factor = 1.0f, float high_freq_factor = 4.0f,
                                   float original_context = 8192.0f);

absl::Status BuildRandomModel(const RandomModelSpec& spec, const GgufFile* vocab_from,
                              GgufWriter* writer);

}  // namespace chorus

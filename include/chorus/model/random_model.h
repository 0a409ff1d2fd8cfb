// Random-weight GGUF models of any llama/qwen2 shape and weight type, deterministic from a
// seed; for tests and benchmarks (no model is ever downloaded). The vocabulary is copied from
// another GGUF file (all tokenizer.* keys) or synthesized (SentencePiece-style: <unk>, <s>,
// </s>, 256 byte tokens, then unused filler tokens).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "chorus/model/gguf.h"
#include "chorus/model/gguf_writer.h"

namespace chorus {

struct RandomModelSpec {
  std::string arch = "llama";  // "llama" or "qwen2"
  int dim = 64;
  int n_layers = 2;
  int n_heads = 4;
  int n_kv_heads = 2;
  int ffn_dim = 128;
  int vocab_size = 512;  // ignored when vocab_from is given
  int context_length = 2048;
  float rope_base = 10000.0f;
  GgmlType weight_type = GgmlType::kF32;  // 2-D weights; norms and biases stay F32
  bool tied_output = false;
  uint64_t seed = 1;
};

// Fills `writer` with the model. vocab_from may be null.
absl::Status BuildRandomModel(const RandomModelSpec& spec, const GgufFile* vocab_from,
                              GgufWriter* writer);

}  // namespace chorus

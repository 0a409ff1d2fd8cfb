// Pieces of the Hugging Face directory loader (hf_model.cc puts them together).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/gguf/gguf.h"
#include "chorus/gguf/gguf_writer.h"
#include "chorus/hf/safetensors.h"
#include "json_util.h"

namespace chorus::hf {

// What config.json says, as far as the weights and the tokenizer need it.
struct HfConfig {
  std::string arch;         // GGUF architecture: llama, qwen2 or qwen3
  bool permute_qk = false;  // llama/mistral: q/k rows go to GGUF's adjacent-pair RoPE order
  int n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int vocab_size = 0;
  bool tied_embeddings = false;
  std::vector<float> rope_freqs;          // Llama 3 rope_scaling divisors, empty otherwise
  std::vector<int64_t> bos_ids, eos_ids;  // config.json's bos_token_id / eos_token_id
};

// config.json -> general.architecture and the {arch}.* keys hparams.cc reads. Architectures,
// rope scaling types and options whose math Chorus lacks are FAILED_PRECONDITION naming the key
// and value; malformed files INVALID_ARGUMENT naming the key.
absl::StatusOr<HfConfig> ConvertConfig(const Json& config, const std::string& what, GgufWriter* w);

// Only config.json's bos_token_id / eos_token_id (each an id or a list of ids).
absl::Status ReadConfigIds(const Json& config, const std::string& what, HfConfig* out);

// tokenizer.json (+ tokenizer_config.json, generation_config.json when present) -> the
// tokenizer.* keys Tokenizer::FromGguf reads. `vocab_size` > 0 pads the vocabulary with unused
// "[PAD<id>]" tokens up to the embedding's rows (as GGUF converters do); `config` may be null.
absl::Status ConvertTokenizer(const std::string& dir, int vocab_size, const HfConfig* config,
                              GgufWriter* w);

// The safetensors files of a directory: model.safetensors, or the shards that
// model.safetensors.index.json lists (every listed tensor must be in its shard, and every
// shard tensor listed there).
struct HfWeights {
  struct Located {
    const SafetensorsTensor* tensor;
    const SafetensorsFile* file;
  };
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, Located> by_name;  // every tensor of every file
};
absl::StatusOr<std::unique_ptr<HfWeights>> OpenWeights(const std::string& dir);

// Owned buffers behind converted tensors (permuted q/k, F32 norms, rope_freqs), kept alive with
// the weights by the GgufFile.
struct TensorStorage {
  std::unique_ptr<HfWeights> weights;
  std::vector<std::unique_ptr<uint8_t[]>> buffers;
  uint64_t owned_bytes = 0;
};

// HF tensor names -> GGUF tensors (token_embd.weight, blk.N.attn_q.weight, ...), pointing into
// the mappings where the bytes can be used as they are. An unknown or unsupported tensor is
// FAILED_PRECONDITION naming it and its file.
absl::StatusOr<std::vector<GgufTensorInfo>> MapTensors(const HfConfig& config,
                                                       TensorStorage* storage);

}  // namespace chorus::hf

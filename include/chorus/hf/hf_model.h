// Hugging Face model directories (config.json, model.safetensors or shards with
// model.safetensors.index.json, tokenizer.json, tokenizer_config.json, generation_config.json)
// converted into the in-memory GGUF the rest of Chorus reads: the same strict loader, backends
// and tokenizer serve both formats.
//
// Memory: the 2-D weights are not copied (the GgufFile's tensors point into the read-only
// safetensors mappings, as with a GGUF file). Copied: llama/mistral q_proj and k_proj (rows
// permuted into GGUF's RoPE order: (q_dim + kv_dim) x dim per layer, e.g. 1.34 GB for
// Llama-3-8B in BF16), 1-D tensors converted to F32 (norms, biases: kilobytes per layer), any
// tensor whose data is not aligned to its element size in the file, and the tokenizer
// metadata (a few MB).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "chorus/gguf/gguf.h"

namespace chorus {

// True when `path` is a directory holding config.json.
bool IsHfModelDirectory(const std::string& path);

// The model: config.json -> {arch}.* keys, the tokenizer keys, tokenizer.chat_template, and the
// tensors under their GGUF names (blk.N.attn_q.weight, ...). Errors name the file and the key
// or tensor: DATA_LOSS for corrupt safetensors, FAILED_PRECONDITION for what Chorus does not
// implement (architecture, rope scaling, sliding window, dtype, unknown tensor),
// INVALID_ARGUMENT for malformed JSON.
absl::StatusOr<std::unique_ptr<GgufFile>> OpenHfModel(const std::string& dir);

// Only the tokenizer (tokenizer.json and, when present, tokenizer_config.json,
// generation_config.json and config.json's ids), as a tensor-less GGUF for Tokenizer::FromGguf.
// vocab_size > 0 pads the vocabulary with unused tokens to that many ids.
absl::StatusOr<std::unique_ptr<GgufFile>> OpenHfTokenizer(const std::string& dir,
                                                          int vocab_size = 0);

}  // namespace chorus

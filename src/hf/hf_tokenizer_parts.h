// Helpers of hf_tokenizer.cc: the tokenization pipeline recognised from tokenizer.json, the
// special token ids from the config files, and the chat template.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "hf_internal.h"

namespace chorus::hf {

struct Vocab {
  std::vector<std::string> tokens;  // by id
  std::vector<int32_t> types;       // GGUF token types; 0 = id not used yet
  std::vector<float> scores;        // SentencePiece-style only
  std::vector<std::string> merges;  // "a b", by rank
  std::unordered_map<std::string, int32_t> ids;
  int64_t max_ids = 1 << 24;  // ids must be below this (the model's vocab_size when known)
  int32_t Find(const std::string& text) const {
    auto it = ids.find(text);
    return it == ids.end() ? -1 : it->second;
  }
};

struct Pipeline {
  bool spm = false;               // SentencePiece-style BPE with byte fallback
  std::string pre;                // byte-level: tokenizer.ggml.pre
  bool nfc = false;               // NFC normalizer
  bool add_space_prefix = false;  // SentencePiece-style: the "▁" prepended to the text
};
// normalizer, pre_tokenizer, decoder and model options -> one of the two supported pipelines.
absl::StatusOr<Pipeline> RecognisePipeline(const Json& tok, std::string_view what);

struct SpecialIds {
  int32_t bos = -1, eos = -1, unk = -1;
  std::vector<int32_t> eog;  // every id that ends generation (eos lists of the config files)
};
absl::StatusOr<SpecialIds> ReadSpecialIds(const Json& tok, const Json& tcfg, const Json& gen,
                                          const HfConfig* config, const Vocab& v,
                                          const std::string& dir);

struct AddSpecial {
  bool bos = false, eos = false;
};
// From the post-processor (TemplateProcessing adds BOS/EOS), overridden by tokenizer_config's
// add_bos_token / add_eos_token when present.
absl::StatusOr<AddSpecial> ReadAddSpecial(const Json& tok, const Json& tcfg, const SpecialIds& ids,
                                          std::string_view what);

// tokenizer_config.json chat_template (a string, or a list of named templates: "default"), or
// the chat_template.jinja file; "" when there is none.
absl::StatusOr<std::string> ReadChatTemplate(const Json& tcfg, const std::string& dir);

}  // namespace chorus::hf

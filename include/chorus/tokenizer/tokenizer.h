// Tokenizers built from GGUF metadata (tokenizer.ggml.*):
//   model "llama": SentencePiece BPE with scores; spaces become U+2581, a dummy-prefix space is
//                  added (tokenizer.ggml.add_space_prefix, default true); pieces not in the
//                  vocabulary fall back to <0xXX> byte tokens.
//   model "gpt2":  byte-level BPE with merges; text is first split by the pre-tokenizer regex
//                  named by tokenizer.ggml.pre ("gpt-2", "llama-bpe", "qwen2", ...).
// Chorus's own keys (written by the Hugging Face loader, src/hf/):
//   tokenizer.chorus.normalizer = "nfc": text is NFC-normalized before BPE (Qwen3);
//   tokenizer.chorus.eog_token_ids: every id that ends generation (generation_config's list).
// User-defined tokens (non-special added tokens such as Qwen3's <think>) are always matched in
// the text, as Hugging Face and llama.cpp do; control tokens only with parse_special.
// Immutable after creation: thread-safe for concurrent const use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "chorus/gguf/gguf.h"

namespace chorus {

enum class TokenType : int32_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

enum class PreTokenizer { kNone, kGpt2, kLlama3, kQwen2 };

class Tokenizer {
 public:
  // Reads the vocabulary from a GGUF file's metadata (weights are not needed).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromGguf(const GgufFile& file);
  ~Tokenizer();

  // Tokenizes text. add_special: prepend BOS / append EOS as the model's add_bos/add_eos flags
  // say. parse_special: text such as "<|eot_id|>" becomes its control token; otherwise it is
  // tokenized as plain text.
  std::vector<int32_t> Encode(std::string_view text, bool add_special, bool parse_special) const;

  // The raw bytes a token stands for (byte tokens give one byte; control tokens "" unless
  // render_special). May be a partial UTF-8 sequence: use Utf8Stream when streaming.
  std::string TokenToBytes(int32_t id, bool render_special = false) const;
  // Decodes ids to text; invalid UTF-8 becomes U+FFFD. strip_leading_space drops one leading
  // space from the first piece (the dummy prefix, for text that starts at the beginning).
  std::string Decode(const std::vector<int32_t>& ids, bool strip_leading_space) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  bool add_bos() const { return add_bos_; }
  bool add_eos() const { return add_eos_; }
  bool add_space_prefix() const { return add_space_prefix_; }
  // End of generation: EOS, EOT, BOS (a new document) and the usual chat end markers.
  bool IsEndOfGeneration(int32_t id) const;
  const std::string& token_text(int32_t id) const { return tokens_[id]; }
  TokenType token_type(int32_t id) const { return types_[id]; }
  // Id of an exact vocabulary entry, or -1.
  int32_t FindToken(std::string_view text) const;

 private:
  Tokenizer() = default;
  absl::Status ReadChorusKeys(const GgufFile& f);  // tokenizer.chorus.*
  void EncodeSpm(std::string_view text, bool add_prefix, std::vector<int32_t>* out) const;
  void EncodeBpe(std::string_view text, std::vector<int32_t>* out) const;
  void EncodeBpeWord(std::string_view word, std::vector<int32_t>* out) const;

  bool is_spm_ = true;
  PreTokenizer pre_ = PreTokenizer::kNone;
  bool ignore_merges_ = false;  // llama-bpe: a word that is itself a token is not merged
  std::vector<std::string> tokens_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  std::unordered_map<std::string, int32_t> token_to_id_;
  std::unordered_map<std::string, int32_t> merge_rank_;  // "left right" -> rank
  std::vector<int32_t> special_ids_;                     // control/user-defined, longest first
  std::vector<int32_t> user_defined_ids_;                // user-defined only, longest first
  std::vector<int32_t> eog_ids_;
  int32_t bos_id_ = -1, eos_id_ = -1, unk_id_ = -1;
  int32_t byte_ids_[256];
  std::vector<int16_t> byte_value_;  // spm: byte of each <0xXX> token, else -1
  bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = true;
  bool nfc_ = false;
};

// Splits text into pre-tokens by the regex of `kind` (byte spans of the input).
std::vector<std::string_view> PreTokenize(PreTokenizer kind, std::string_view text);

// GPT-2 byte-level mapping: every byte to a printable code point, and back (-1 if none).
const std::string& ByteToUnicode(uint8_t b);
int UnicodeToByte(uint32_t cp);

}  // namespace chorus

#include "chorus/tokenizer/tokenizer.h"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>

#include <algorithm>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <unordered_map>
#include <vector>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/core/utf8.h"

namespace chorus {
namespace {

absl::StatusOr<int32_t> OptionalId(const GgufFile& f, std::string_view key, int32_t vocab) {
  if (f.Find(key) == nullptr) return -1;
  CHORUS_ASSIGN_OR_RETURN(uint64_t id, f.GetUint(key, UINT32_MAX));
  if (id == UINT32_MAX) return -1;  // "not set" in llama.cpp's converters
  if (id >= static_cast<uint64_t>(vocab)) {
    return absl::FailedPreconditionError(
        StrCat("gguf: ", key, " = ", id, " is outside the vocabulary (size ", vocab, ")"));
  }
  return static_cast<int32_t>(id);
}

// NFC of the valid UTF-8 runs of `text` (invalid bytes are kept as they are).
std::string Nfc(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return (c & 0x80) == 0; })) {
    return std::string(text);
  }
  UErrorCode err = U_ZERO_ERROR;
  const icu::Normalizer2* nfc = icu::Normalizer2::getNFCInstance(err);
  if (U_FAILURE(err)) return std::string(text);
  std::string out;
  for (size_t i = 0; i < text.size();) {
    size_t j = i;
    int len = 0;
    while (j < text.size()) {
      const uint32_t cp = DecodeUtf8(text, j, &len);
      if (cp == 0xFFFD && text.compare(j, 3, "\xef\xbf\xbd") != 0) break;  // invalid
      j += len;
    }
    if (j > i) {
      icu::UnicodeString u = icu::UnicodeString::fromUTF8(
          icu::StringPiece(text.data() + i, static_cast<int32_t>(j - i)));
      UErrorCode e = U_ZERO_ERROR;
      const icu::UnicodeString n = nfc->normalize(u, e);
      if (U_SUCCESS(e)) {
        n.toUTF8String(out);
      } else {
        out.append(text.substr(i, j - i));
      }
    }
    if (j < text.size()) out.append(text.substr(j, len));  // the invalid bytes
    i = j < text.size() ? j + len : j;
  }
  return out;
}

absl::StatusOr<bool> OptionalBool(const GgufFile& f, std::string_view key, bool def) {
  if (f.Find(key) == nullptr) return def;
  return f.GetBool(key);
}

// tokenizer.ggml.model: "llama" (SentencePiece: true) or "gpt2" (byte-level BPE: false).
absl::StatusOr<bool> ReadIsSpm(const GgufFile& f) {
  CHORUS_ASSIGN_OR_RETURN(std::string_view model, f.GetString("tokenizer.ggml.model"));
  if (model == "llama") return true;
  if (model == "gpt2") return false;
  return absl::FailedPreconditionError(
      StrCat("gguf: tokenizer.ggml.model '", model, "' is not supported (llama, gpt2)"));
}

// tokenizer.ggml.tokens, and .scores and .token_type when present (else 0 and kNormal). The
// first occurrence of a duplicated token text wins in `token_to_id`.
absl::Status ReadVocab(const GgufFile& f, std::vector<std::string>* tokens_out,
                       std::unordered_map<std::string, int32_t>* token_to_id,
                       std::vector<float>* scores, std::vector<TokenType>* types) {
  CHORUS_ASSIGN_OR_RETURN(const GgufValue* tokens,
                          f.GetArray("tokenizer.ggml.tokens", GgufType::kString));
  if (tokens->count == 0 || tokens->count > (1u << 24)) {
    return absl::FailedPreconditionError(
        StrCat("gguf: tokenizer.ggml.tokens has ", tokens->count, " entries"));
  }
  const auto n = static_cast<int32_t>(tokens->count);
  tokens_out->reserve(n);
  token_to_id->reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    tokens_out->emplace_back(tokens->strings[i]);
    token_to_id->emplace(tokens_out->back(), i);  // first occurrence wins
  }
  scores->assign(n, 0.0f);
  if (f.Find("tokenizer.ggml.scores") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(const GgufValue* s,
                            f.GetArray("tokenizer.ggml.scores", GgufType::kF32));
    if (s->count != tokens->count) {
      return absl::FailedPreconditionError(
          StrCat("gguf: tokenizer.ggml.scores has ", s->count, " entries, tokens has ", n));
    }
    for (int32_t i = 0; i < n; ++i) (*scores)[i] = static_cast<float>(s->ArrayFloat(i));
  }
  types->assign(n, TokenType::kNormal);
  if (f.Find("tokenizer.ggml.token_type") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(const GgufValue* ty,
                            f.GetArray("tokenizer.ggml.token_type", GgufType::kI32));
    if (ty->count != tokens->count) {
      return absl::FailedPreconditionError(
          StrCat("gguf: tokenizer.ggml.token_type has ", ty->count, " entries, tokens has ", n));
    }
    for (int32_t i = 0; i < n; ++i) {
      const int64_t v = ty->ArrayInt(i);
      if (v < 0 || v > 6) {
        return absl::FailedPreconditionError(
            StrCat("gguf: tokenizer.ggml.token_type[", i, "] = ", v, " is not in [0, 6]"));
      }
      (*types)[i] = static_cast<TokenType>(v);
    }
  }
  return absl::OkStatus();
}

// End-of-generation ids: `ids` (EOS, EOT, EOM, BOS; -1 = unset) and the usual chat end markers
// when the vocabulary has them as control tokens. BOS too: a model that emits it has finished
// its document and starts another.
std::vector<int32_t> EndOfGenerationIds(const Tokenizer& t, std::initializer_list<int32_t> ids) {
  std::vector<int32_t> eog;
  for (int32_t id : ids) {
    if (id >= 0) eog.push_back(id);
  }
  for (std::string_view s : {"<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<|end_of_text|>",
                             "<|endoftext|>", "<end_of_turn>", "<|end|>"}) {
    const int32_t id = t.FindToken(s);
    if (id >= 0 && t.token_type(id) == TokenType::kControl) eog.push_back(id);
  }
  return eog;
}

// Non-empty control and user-defined tokens, longest first (`special`), and the user-defined
// ones alone in the same order (`user_defined`).
void CollectSpecialIds(const std::vector<std::string>& tokens, const std::vector<TokenType>& types,
                       std::vector<int32_t>* special, std::vector<int32_t>* user_defined) {
  const auto n = static_cast<int32_t>(tokens.size());
  for (int32_t i = 0; i < n; ++i) {
    if ((types[i] == TokenType::kControl || types[i] == TokenType::kUserDefined) &&
        !tokens[i].empty()) {
      special->push_back(i);
    }
  }
  std::stable_sort(special->begin(), special->end(),
                   [&](int32_t a, int32_t b) { return tokens[a].size() > tokens[b].size(); });
  for (int32_t id : *special) {
    if (types[id] == TokenType::kUserDefined) user_defined->push_back(id);
  }
}

// tokenizer.ggml.merges: "left right" -> rank (its index).
absl::Status ReadBpeMerges(const GgufFile& f, std::unordered_map<std::string, int32_t>* rank) {
  CHORUS_ASSIGN_OR_RETURN(const GgufValue* merges,
                          f.GetArray("tokenizer.ggml.merges", GgufType::kString));
  rank->reserve(merges->count);
  for (uint64_t i = 0; i < merges->count; ++i) {
    rank->emplace(std::string(merges->strings[i]), static_cast<int32_t>(i));
  }
  return absl::OkStatus();
}

// tokenizer.ggml.pre (default "default"): the pre-tokenizer regex of a byte-level BPE model.
absl::Status ReadPreTokenizer(const GgufFile& f, PreTokenizer* kind, bool* ignore_merges) {
  std::string_view pre = "default";
  if (f.Find("tokenizer.ggml.pre") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(pre, f.GetString("tokenizer.ggml.pre"));
  }
  if (pre == "llama-bpe" || pre == "llama3" || pre == "smaug-bpe") {
    *kind = PreTokenizer::kLlama3;
    *ignore_merges = true;
  } else if (pre == "qwen2" || pre == "deepseek-r1-qwen") {
    *kind = PreTokenizer::kQwen2;
  } else if (pre == "gpt-2" || pre == "default" || pre == "gpt2") {
    *kind = PreTokenizer::kGpt2;
  } else {
    return absl::FailedPreconditionError(
        StrCat("gguf: tokenizer.ggml.pre '", pre, "' is not supported (gpt-2, llama-bpe, qwen2)"));
  }
  return absl::OkStatus();
}

}  // namespace

Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromGguf(const GgufFile& f) {
  std::unique_ptr<Tokenizer> t(new Tokenizer());
  CHORUS_ASSIGN_OR_RETURN(t->is_spm_, ReadIsSpm(f));
  CHORUS_RETURN_IF_ERROR(ReadVocab(f, &t->tokens_, &t->token_to_id_, &t->scores_, &t->types_));
  const int32_t n = t->vocab_size();
  CHORUS_ASSIGN_OR_RETURN(t->bos_id_, OptionalId(f, "tokenizer.ggml.bos_token_id", n));
  CHORUS_ASSIGN_OR_RETURN(t->eos_id_, OptionalId(f, "tokenizer.ggml.eos_token_id", n));
  CHORUS_ASSIGN_OR_RETURN(t->unk_id_, OptionalId(f, "tokenizer.ggml.unknown_token_id", n));
  CHORUS_ASSIGN_OR_RETURN(int32_t eot, OptionalId(f, "tokenizer.ggml.eot_token_id", n));
  CHORUS_ASSIGN_OR_RETURN(int32_t eom, OptionalId(f, "tokenizer.ggml.eom_token_id", n));
  CHORUS_ASSIGN_OR_RETURN(t->add_bos_, OptionalBool(f, "tokenizer.ggml.add_bos_token", t->is_spm_));
  CHORUS_ASSIGN_OR_RETURN(t->add_eos_, OptionalBool(f, "tokenizer.ggml.add_eos_token", false));
  CHORUS_ASSIGN_OR_RETURN(t->add_space_prefix_,
                          OptionalBool(f, "tokenizer.ggml.add_space_prefix", t->is_spm_));
  if (t->is_spm_ && t->unk_id_ < 0) t->unk_id_ = t->FindToken("<unk>");
  t->eog_ids_ = EndOfGenerationIds(*t, {t->eos_id_, eot, eom, t->bos_id_});
  CollectSpecialIds(t->tokens_, t->types_, &t->special_ids_, &t->user_defined_ids_);
  CHORUS_RETURN_IF_ERROR(t->ReadChorusKeys(f));

  if (t->is_spm_) {
    t->byte_value_.assign(n, -1);
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      t->byte_ids_[b] = t->FindToken(name);
      if (t->byte_ids_[b] >= 0) t->byte_value_[t->byte_ids_[b]] = static_cast<int16_t>(b);
    }
  } else {
    for (int b = 0; b < 256; ++b) t->byte_ids_[b] = t->FindToken(ByteToUnicode(b));
    CHORUS_RETURN_IF_ERROR(ReadBpeMerges(f, &t->merge_rank_));
    CHORUS_RETURN_IF_ERROR(ReadPreTokenizer(f, &t->pre_, &t->ignore_merges_));
  }
  return t;
}

absl::Status Tokenizer::ReadChorusKeys(const GgufFile& f) {
  if (f.Find("tokenizer.chorus.normalizer") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(std::string_view norm, f.GetString("tokenizer.chorus.normalizer"));
    if (norm != "nfc" && norm != "none") {
      return absl::FailedPreconditionError(
          StrCat("gguf: tokenizer.chorus.normalizer '", norm, "' is not supported (none, nfc)"));
    }
    nfc_ = norm == "nfc";
  }
  if (f.Find("tokenizer.chorus.eog_token_ids") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(const GgufValue* ids,
                            f.GetArray("tokenizer.chorus.eog_token_ids", GgufType::kI32));
    for (uint64_t i = 0; i < ids->count; ++i) {
      const int64_t id = ids->ArrayInt(i);
      if (id < 0 || id >= vocab_size()) {
        return absl::FailedPreconditionError(StrCat("gguf: tokenizer.chorus.eog_token_ids[", i,
                                                    "] = ", id, " is outside the vocabulary"));
      }
      const auto eog = static_cast<int32_t>(id);
      if (!IsEndOfGeneration(eog)) eog_ids_.push_back(eog);
    }
  }
  return absl::OkStatus();
}

int32_t Tokenizer::FindToken(std::string_view text) const {
  auto it = token_to_id_.find(std::string(text));
  return it == token_to_id_.end() ? -1 : it->second;
}

bool Tokenizer::IsEndOfGeneration(int32_t id) const {
  return std::find(eog_ids_.begin(), eog_ids_.end(), id) != eog_ids_.end();
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special,
                                       bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special && add_bos_ && bos_id_ >= 0) out.push_back(bos_id_);
  // Split the text at special-token occurrences (longest match first) when asked.
  bool at_start = true;
  size_t plain_begin = 0;
  std::string normalized;
  auto flush = [&](size_t end) {
    if (end > plain_begin) {
      std::string_view part = text.substr(plain_begin, end - plain_begin);
      if (nfc_) part = normalized = Nfc(part);
      if (is_spm_) {
        EncodeSpm(part, add_space_prefix_ && at_start, &out);
      } else {
        EncodeBpe(part, &out);
      }
      at_start = false;
    }
  };
  // Control tokens only when parsing special text; user-defined tokens always.
  const std::vector<int32_t>& matched = parse_special ? special_ids_ : user_defined_ids_;
  if (!matched.empty()) {
    for (size_t i = 0; i < text.size();) {
      int32_t hit = -1;
      for (int32_t id : matched) {
        if (text.compare(i, tokens_[id].size(), tokens_[id]) == 0) {
          hit = id;
          break;
        }
      }
      if (hit < 0) {
        ++i;
        continue;
      }
      flush(i);
      out.push_back(hit);
      at_start = false;
      i += tokens_[hit].size();
      plain_begin = i;
    }
  }
  flush(text.size());
  if (add_special && add_eos_ && eos_id_ >= 0) out.push_back(eos_id_);
  return out;
}

std::string Tokenizer::TokenToBytes(int32_t id, bool render_special) const {
  if (id < 0 || id >= vocab_size()) return "";
  const std::string& t = tokens_[id];
  const TokenType type = types_[id];
  if (type == TokenType::kControl || type == TokenType::kUnknown) {
    return render_special ? t : std::string();
  }
  if (type == TokenType::kUnused) return "";  // padding ids beyond the real vocabulary
  if (is_spm_) {
    if (type == TokenType::kByte && byte_value_[id] >= 0) {
      return std::string(1, static_cast<char>(byte_value_[id]));
    }
    std::string out;
    for (size_t i = 0; i < t.size();) {
      if (t.compare(i, 3, "\xe2\x96\x81") == 0) {  // U+2581
        out.push_back(' ');
        i += 3;
      } else {
        out.push_back(t[i++]);
      }
    }
    return out;
  }
  if (type == TokenType::kUserDefined) return t;
  std::string out;
  for (size_t i = 0; i < t.size();) {
    int len;
    const uint32_t cp = DecodeUtf8(t, i, &len);
    const int b = UnicodeToByte(cp);
    if (b >= 0) {
      out.push_back(static_cast<char>(b));
    } else {
      out.append(t, i, len);
    }
    i += len;
  }
  return out;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool strip_leading_space) const {
  Utf8Stream stream;
  std::string out;
  bool first = true;
  for (int32_t id : ids) {
    std::string bytes = TokenToBytes(id);
    if (first && !bytes.empty()) {
      if (strip_leading_space && bytes[0] == ' ') bytes.erase(0, 1);
      first = false;
    }
    out += stream.Push(bytes);
  }
  return out + stream.Flush();
}

}  // namespace chorus

// tokenizer.json -> GGUF tokenizer keys. Two kinds of Hugging Face BPE models are recognised:
//   byte-level (Llama 3, Qwen2/3, GPT-2): "gpt2" with the pre-tokenizer named by its regex;
//   SentencePiece-style with byte_fallback (Llama 2, Mistral): "llama", scores derived from the
//   merge ranks (a piece made by an earlier merge scores higher, which is how the merges were
//   derived from SentencePiece scores in the first place).
// Anything else that changes tokenization (other normalizers, pre-tokenizers, post-processors,
// added-token stripping) is refused by name.
#include <unordered_map>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "hf_internal.h"
#include "hf_tokenizer_parts.h"

namespace chorus::hf {
namespace {

constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6;

absl::StatusOr<Json> ReadOptionalJson(const std::string& path) {
  auto j = ReadJsonFile(path, 64ull << 20);
  if (absl::IsNotFound(j.status())) return Json::object();
  return j;
}

absl::Status AddToken(Vocab* v, int64_t id, const std::string& text, int32_t type,
                      std::string_view what) {
  if (id < 0 || id >= v->max_ids) {
    return absl::InvalidArgumentError(
        StrCat(what, ": token '", text, "' has id ", id, ", outside [0, ", v->max_ids, ")"));
  }
  if (static_cast<size_t>(id) >= v->tokens.size()) {
    v->tokens.resize(id + 1);
    v->types.resize(id + 1, 0);
  }
  if (v->types[id] != 0 && v->tokens[id] != text) {
    return absl::InvalidArgumentError(
        StrCat(what, ": id ", id, " is both '", v->tokens[id], "' and '", text, "'"));
  }
  v->tokens[id] = text;
  v->types[id] = type;
  v->ids.emplace(text, static_cast<int32_t>(id));
  return absl::OkStatus();
}

absl::Status ReadVocab(const Json& model, std::string_view what, Vocab* v) {
  if (!model.contains("vocab") || !model["vocab"].is_object() || model["vocab"].empty()) {
    return absl::InvalidArgumentError(StrCat(what, ": model.vocab is not a non-empty object"));
  }
  for (auto it = model["vocab"].begin(); it != model["vocab"].end(); ++it) {
    if (!it->is_number_integer()) {
      return absl::InvalidArgumentError(
          StrCat(what, ": model.vocab['", it.key(), "'] is not an id"));
    }
    CHORUS_RETURN_IF_ERROR(AddToken(v, it->get<int64_t>(), it.key(), kNormal, what));
  }
  return absl::OkStatus();
}

// added_tokens: special -> control, others user-defined (always matched in text, as HF does).
absl::Status ReadAddedTokens(const Json& tok, std::string_view what, Vocab* v) {
  if (!Has(tok, "added_tokens")) return absl::OkStatus();
  if (!tok["added_tokens"].is_array()) {
    return absl::InvalidArgumentError(StrCat(what, ": added_tokens is not a list"));
  }
  for (const Json& a : tok["added_tokens"]) {
    CHORUS_ASSIGN_OR_RETURN(int64_t id, GetInt(a, "id", 0, (1 << 24) - 1, what));
    CHORUS_ASSIGN_OR_RETURN(std::string content, GetString(a, "content", what));
    bool special = false;
    if (Has(a, "special")) {
      CHORUS_ASSIGN_OR_RETURN(special, GetBool(a, "special", what));
    }
    for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
      if (Has(a, flag) && a[flag] != false) {
        return absl::FailedPreconditionError(StrCat(what, ": added token '", content, "' has ",
                                                    flag, " = true, which is not supported"));
      }
    }
    if (content.empty()) {
      return absl::InvalidArgumentError(StrCat(what, ": added token ", id, " is empty"));
    }
    const int32_t type = special ? kControl : kUserDefined;
    CHORUS_RETURN_IF_ERROR(AddToken(v, id, content, type, what));
  }
  return absl::OkStatus();
}

// merges: "a b" strings or [a, b] pairs; both halves and their concatenation in the vocabulary.
absl::Status ReadMerges(const Json& model, std::string_view what, Vocab* v) {
  if (!model.contains("merges") || !model["merges"].is_array()) {
    return absl::InvalidArgumentError(StrCat(what, ": model.merges is not a list"));
  }
  v->merges.reserve(model["merges"].size());
  for (const Json& m : model["merges"]) {
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        return absl::InvalidArgumentError(StrCat(what, ": merge '", s, "' is not \"a b\""));
      }
      a = s.substr(0, sp), b = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>(), b = m[1].get<std::string>();
      if (a.find(' ') != std::string::npos || b.find(' ') != std::string::npos) {
        return absl::FailedPreconditionError(
            StrCat(what, ": merge [", ShortJson(m), "] has a space inside a piece"));
      }
    } else {
      return absl::InvalidArgumentError(
          StrCat(what, ": merge ", ShortJson(m), " is neither \"a b\" nor [a, b]"));
    }
    for (const std::string* piece : {&a, &b}) {
      if (v->ids.count(*piece) == 0) {
        return absl::InvalidArgumentError(
            StrCat(what, ": merge '", a, " ", b, "': '", *piece, "' is not in the vocabulary"));
      }
    }
    if (v->ids.count(a + b) == 0) {
      return absl::InvalidArgumentError(
          StrCat(what, ": merge '", a, " ", b, "' makes '", a + b, "', not in the vocabulary"));
    }
    v->merges.push_back(a + " " + b);
  }
  return absl::OkStatus();
}

// SentencePiece-style: score = -(rank of the first merge that makes the piece); byte pieces
// <0xXX> are byte tokens; pieces no merge makes score lowest.
void SpmScoresAndTypes(Vocab* v) {
  v->scores.assign(v->tokens.size(), -1e9f);
  for (size_t r = 0; r < v->merges.size(); ++r) {
    std::string joined = v->merges[r];
    joined.erase(joined.find(' '), 1);
    const int32_t id = v->ids[joined];
    v->scores[id] = std::max(v->scores[id], -static_cast<float>(r));
  }
  for (size_t i = 0; i < v->tokens.size(); ++i) {
    const std::string& t = v->tokens[i];
    if (v->types[i] == kNormal && t.size() == 6 && t.starts_with("<0x") && t.back() == '>') {
      v->types[i] = kByte;
    }
  }
}

// Unused ids (gaps, and rows of the embedding beyond the tokenizer) as GGUF converters fill them.
absl::Status PadVocab(Vocab* v, int vocab_size, std::string_view what) {
  if (vocab_size > 0 && v->tokens.size() > static_cast<size_t>(vocab_size)) {
    return absl::FailedPreconditionError(StrCat(what, ": the tokenizer has ", v->tokens.size(),
                                                " tokens but the model's vocab_size is ",
                                                vocab_size));
  }
  if (vocab_size > 0) {
    v->tokens.resize(vocab_size);
    v->types.resize(vocab_size, 0);
  }
  for (size_t i = 0; i < v->tokens.size(); ++i) {
    if (v->types[i] == 0) {
      v->tokens[i] = StrCat("[PAD", i, "]");
      v->types[i] = kUnused;
    }
  }
  return absl::OkStatus();
}

void WriteVocab(const Vocab& v, bool spm, GgufWriter* w) {
  w->SetString("tokenizer.ggml.model", spm ? "llama" : "gpt2");
  w->SetStringArray("tokenizer.ggml.tokens", v.tokens);
  w->SetI32Array("tokenizer.ggml.token_type", v.types);
  if (spm) {
    std::vector<float> scores = v.scores;
    scores.resize(v.tokens.size(), -1e9f);
    w->SetF32Array("tokenizer.ggml.scores", scores);
  } else {
    w->SetStringArray("tokenizer.ggml.merges", v.merges);
  }
}

}  // namespace

absl::Status ConvertTokenizer(const std::string& dir, int vocab_size, const HfConfig* config,
                              GgufWriter* w) {
  const std::string what = dir + "/tokenizer.json";
  CHORUS_ASSIGN_OR_RETURN(Json tok, ReadJsonFile(what));
  CHORUS_ASSIGN_OR_RETURN(Json tcfg, ReadOptionalJson(dir + "/tokenizer_config.json"));
  CHORUS_ASSIGN_OR_RETURN(Json gen, ReadOptionalJson(dir + "/generation_config.json"));
  if (!tok.is_object() || !tok.contains("model") || !tok["model"].is_object()) {
    return absl::InvalidArgumentError(StrCat(what, ": no 'model' object"));
  }
  const Json& model = tok["model"];
  CHORUS_ASSIGN_OR_RETURN(std::string type, GetString(model, "type", what));
  if (type != "BPE") {
    return absl::FailedPreconditionError(
        StrCat(what, ": model.type '", type, "' is not supported (BPE)"));
  }
  Vocab v;
  if (vocab_size > 0) v.max_ids = vocab_size;
  CHORUS_RETURN_IF_ERROR(ReadVocab(model, what, &v));
  CHORUS_RETURN_IF_ERROR(ReadAddedTokens(tok, what, &v));
  CHORUS_RETURN_IF_ERROR(ReadMerges(model, what, &v));
  CHORUS_ASSIGN_OR_RETURN(Pipeline pipe, RecognisePipeline(tok, what));
  if (pipe.spm) SpmScoresAndTypes(&v);
  CHORUS_RETURN_IF_ERROR(PadVocab(&v, vocab_size, what));
  CHORUS_ASSIGN_OR_RETURN(SpecialIds ids, ReadSpecialIds(tok, tcfg, gen, config, v, dir));
  if (pipe.spm && ids.unk >= 0) v.types[ids.unk] = kUnknown;
  WriteVocab(v, pipe.spm, w);
  if (!pipe.spm) w->SetString("tokenizer.ggml.pre", pipe.pre);
  if (pipe.nfc) w->SetString("tokenizer.chorus.normalizer", "nfc");
  if (pipe.spm) w->SetBool("tokenizer.ggml.add_space_prefix", pipe.add_space_prefix);
  if (ids.bos >= 0) w->SetU32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(ids.bos));
  if (ids.eos >= 0) w->SetU32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(ids.eos));
  if (ids.unk >= 0) w->SetU32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(ids.unk));
  if (!ids.eog.empty()) w->SetI32Array("tokenizer.chorus.eog_token_ids", ids.eog);
  CHORUS_ASSIGN_OR_RETURN(AddSpecial add, ReadAddSpecial(tok, tcfg, ids, what));
  w->SetBool("tokenizer.ggml.add_bos_token", add.bos);
  w->SetBool("tokenizer.ggml.add_eos_token", add.eos);
  CHORUS_ASSIGN_OR_RETURN(std::string chat, ReadChatTemplate(tcfg, dir));
  if (!chat.empty()) w->SetString("tokenizer.chat_template", chat);
  return absl::OkStatus();
}

}  // namespace chorus::hf

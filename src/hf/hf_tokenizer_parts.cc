#include "hf_tokenizer_parts.h"

#include <algorithm>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus::hf {
namespace {

// The pre-tokenizer regexes of Llama 3 and Qwen2/Qwen3, as tokenizer.json spells them.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|)"
    R"( ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's space

const Json& Field(const Json& obj, const std::string& key) {
  static const Json null;
  return obj.is_object() && obj.contains(key) ? obj[key] : null;
}

std::string TypeOf(const Json& obj) {
  const Json& t = Field(obj, "type");
  return t.is_string() ? t.get<std::string>() : std::string();
}

absl::Status Refuse(std::string_view what, std::string_view part, const Json& value,
                    std::string_view supported) {
  return absl::FailedPreconditionError(
      StrCat(what, ": ", part, " ", ShortJson(value), " is not supported (", supported, ")"));
}

// Sequence[Split(regex, Isolated), ByteLevel(no regex)] or ByteLevel(GPT-2 regex).
absl::StatusOr<std::string> ByteLevelPre(const Json& pre, std::string_view what) {
  auto byte_level_ok = [](const Json& b, bool use_regex) {
    return TypeOf(b) == "ByteLevel" && Field(b, "add_prefix_space") != true &&
           Field(b, "use_regex") == use_regex;
  };
  if (byte_level_ok(pre, true)) return std::string("gpt-2");
  const Json& list = Field(pre, "pretokenizers");
  if (TypeOf(pre) != "Sequence" || !list.is_array() || list.size() != 2 ||
      TypeOf(list[0]) != "Split" || !byte_level_ok(list[1], false) ||
      Field(list[0], "behavior") != "Isolated" || Field(list[0], "invert") != false) {
    return Refuse(what, "pre_tokenizer", pre,
                  "Split(regex, Isolated) then ByteLevel, or ByteLevel with its regex");
  }
  const Json& regex = Field(Field(list[0], "pattern"), "Regex");
  if (regex == kLlama3Regex) return std::string("llama-bpe");
  if (regex == kQwen2Regex) return std::string("qwen2");
  return Refuse(what, "pre_tokenizer regex", regex, "the Llama 3 and Qwen2 regexes");
}

absl::StatusOr<Pipeline> ByteLevelPipeline(const Json& tok, std::string_view what) {
  Pipeline p;
  const Json& norm = Field(tok, "normalizer");
  if (!norm.is_null()) {
    if (TypeOf(norm) != "NFC") return Refuse(what, "normalizer", norm, "none, NFC");
    p.nfc = true;
  }
  CHORUS_ASSIGN_OR_RETURN(p.pre, ByteLevelPre(Field(tok, "pre_tokenizer"), what));
  const bool ignore_merges = Field(tok["model"], "ignore_merges") == true;
  if (ignore_merges != (p.pre == "llama-bpe")) {
    return absl::FailedPreconditionError(
        StrCat(what, ": model.ignore_merges = ", ignore_merges, " with the ", p.pre,
               " pre-tokenizer is not supported (true only with Llama 3's)"));
  }
  if (TypeOf(Field(tok, "decoder")) != "ByteLevel") {
    return Refuse(what, "decoder", Field(tok, "decoder"), "ByteLevel");
  }
  return p;
}

// Llama 2: normalizer Sequence[Prepend("▁"), Replace(" ", "▁")]; newer files: Metaspace.
absl::StatusOr<Pipeline> SpmPipeline(const Json& tok, std::string_view what) {
  Pipeline p;
  p.spm = true;
  bool replaces_spaces = false;
  const Json& norm = Field(tok, "normalizer");
  const Json steps = TypeOf(norm) == "Sequence" ? Field(norm, "normalizers")
                     : norm.is_null()           ? Json::array()
                                                : Json::array({norm});
  for (const Json& s : steps) {
    if (TypeOf(s) == "Prepend" && Field(s, "prepend") == kSpace) {
      p.add_space_prefix = true;
    } else if (TypeOf(s) == "Replace" && Field(Field(s, "pattern"), "String") == " " &&
               Field(s, "content") == kSpace) {
      replaces_spaces = true;
    } else {
      return Refuse(what, "normalizer step", s, "Prepend(\u2581), Replace(' ', \u2581)");
    }
  }
  const Json& pre = Field(tok, "pre_tokenizer");
  if (TypeOf(pre) == "Metaspace" && Field(pre, "replacement") == kSpace &&
      Field(pre, "split") != true) {
    replaces_spaces = true;
    const Json& scheme = Field(pre, "prepend_scheme");
    p.add_space_prefix =
        scheme.is_null() ? Field(pre, "add_prefix_space") != false : scheme != "never";
  } else if (!pre.is_null()) {
    return Refuse(what, "pre_tokenizer", pre, "none, Metaspace without split");
  }
  if (!replaces_spaces) {
    return absl::FailedPreconditionError(
        StrCat(what, ": a byte_fallback BPE whose spaces do not become \u2581 is not supported"));
  }
  return p;
}

absl::StatusOr<int32_t> IdOfText(const Json& v, const Vocab& vocab, std::string_view key,
                                 std::string_view what) {
  const Json& text = v.is_object() ? Field(v, "content") : v;
  if (text.is_null()) return -1;
  if (!text.is_string()) {
    return absl::InvalidArgumentError(StrCat(what, ": ", key, " is not a token"));
  }
  const int32_t id = vocab.Find(text.get<std::string>());
  if (id < 0) {
    return absl::InvalidArgumentError(
        StrCat(what, ": ", key, " '", text.get<std::string>(), "' is not in the vocabulary"));
  }
  return id;
}

// An id or a list of ids (generation_config / config eos_token_id), appended to `out`.
absl::Status AppendIds(const Json& v, std::string_view what, size_t vocab,
                       std::vector<int32_t>* out) {
  if (v.is_null()) return absl::OkStatus();
  for (const Json& id : v.is_array() ? v : Json::array({v})) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<uint64_t>() >= static_cast<uint64_t>(vocab)) {
      return absl::InvalidArgumentError(
          StrCat(what, ": token id ", ShortJson(id), " is outside the vocabulary of ", vocab));
    }
    out->push_back(id.get<int32_t>());
  }
  return absl::OkStatus();
}

// TemplateProcessing "single": [SpecialToken...] Sequence A [SpecialToken...].
absl::Status ReadTemplate(const Json& pp, const SpecialIds& ids, std::string_view what,
                          AddSpecial* add) {
  const Json& single = Field(pp, "single");
  if (!single.is_array()) return Refuse(what, "post_processor", pp, "TemplateProcessing");
  bool seen_sequence = false;
  std::vector<int64_t> before, after;
  for (const Json& item : single) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const Json& name = Field(Field(item, "SpecialToken"), "id");
    const Json& token = Field(Field(pp, "special_tokens"),
                              name.is_string() ? name.get<std::string>() : std::string());
    const Json& list = Field(token, "ids");
    if (!list.is_array() || list.size() != 1 || !list[0].is_number_integer()) {
      return Refuse(what, "post_processor item", item, "special tokens of one id");
    }
    (seen_sequence ? after : before).push_back(list[0].get<int64_t>());
  }
  const bool ok = seen_sequence && before.size() <= 1 && after.size() <= 1 &&
                  (before.empty() || before[0] == ids.bos) &&
                  (after.empty() || after[0] == ids.eos);
  if (!ok) return Refuse(what, "post_processor template", single, "[BOS] $A [EOS]");
  add->bos = !before.empty();
  add->eos = !after.empty();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Pipeline> RecognisePipeline(const Json& tok, std::string_view what) {
  const Json& model = tok["model"];
  const Json& dropout = Field(model, "dropout");
  if (!dropout.is_null() && dropout != 0) return Refuse(what, "model.dropout", dropout, "none");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    const Json& v = Field(model, key);
    if (!v.is_null() && v != "") return Refuse(what, StrCat("model.", key), v, "none");
  }
  if (Field(model, "byte_fallback") == true) return SpmPipeline(tok, what);
  return ByteLevelPipeline(tok, what);
}

absl::StatusOr<SpecialIds> ReadSpecialIds(const Json& tok, const Json& tcfg, const Json& gen,
                                          const HfConfig* config, const Vocab& v,
                                          const std::string& dir) {
  SpecialIds ids;
  const std::string tc = dir + "/tokenizer_config.json", gc = dir + "/generation_config.json";
  const size_t n = v.tokens.size();
  std::vector<int32_t> gen_bos, gen_eos, cfg_bos, cfg_eos;
  CHORUS_RETURN_IF_ERROR(AppendIds(Field(gen, "bos_token_id"), gc, n, &gen_bos));
  CHORUS_RETURN_IF_ERROR(AppendIds(Field(gen, "eos_token_id"), gc, n, &gen_eos));
  if (config != nullptr) {
    const Json b(config->bos_ids), e(config->eos_ids);
    CHORUS_RETURN_IF_ERROR(AppendIds(b, dir + "/config.json", n, &cfg_bos));
    CHORUS_RETURN_IF_ERROR(AppendIds(e, dir + "/config.json", n, &cfg_eos));
  }
  // tokenizer_config.json names the tokens (null: none); the other files give ids.
  if (tcfg.contains("bos_token")) {
    CHORUS_ASSIGN_OR_RETURN(ids.bos, IdOfText(tcfg["bos_token"], v, "bos_token", tc));
  } else if (!gen_bos.empty() || !cfg_bos.empty()) {
    ids.bos = !gen_bos.empty() ? gen_bos[0] : cfg_bos[0];
  }
  if (tcfg.contains("eos_token")) {
    CHORUS_ASSIGN_OR_RETURN(ids.eos, IdOfText(tcfg["eos_token"], v, "eos_token", tc));
  }
  if (ids.eos < 0 && (!gen_eos.empty() || !cfg_eos.empty())) {
    ids.eos = !gen_eos.empty() ? gen_eos[0] : cfg_eos[0];
  }
  const Json& unk =
      tcfg.contains("unk_token") ? tcfg["unk_token"] : Field(tok["model"], "unk_token");
  CHORUS_ASSIGN_OR_RETURN(ids.unk, IdOfText(unk, v, "unk_token", tc));
  for (const std::vector<int32_t>* list : {&gen_eos, &cfg_eos}) {
    for (int32_t id : *list) ids.eog.push_back(id);
  }
  if (ids.eos >= 0) ids.eog.insert(ids.eog.begin(), ids.eos);
  std::vector<int32_t> unique;
  for (int32_t id : ids.eog) {
    if (std::find(unique.begin(), unique.end(), id) == unique.end()) unique.push_back(id);
  }
  ids.eog = std::move(unique);
  return ids;
}

absl::StatusOr<AddSpecial> ReadAddSpecial(const Json& tok, const Json& tcfg, const SpecialIds& ids,
                                          std::string_view what) {
  AddSpecial add;
  const Json& pp = Field(tok, "post_processor");
  const Json list = TypeOf(pp) == "Sequence" ? Field(pp, "processors")
                    : pp.is_null()           ? Json::array()
                                             : Json::array({pp});
  for (const Json& p : list) {
    if (TypeOf(p) == "ByteLevel") continue;
    if (TypeOf(p) != "TemplateProcessing") {
      return Refuse(what, "post_processor", p, "ByteLevel, TemplateProcessing");
    }
    CHORUS_RETURN_IF_ERROR(ReadTemplate(p, ids, what, &add));
  }
  // Llama tokenizer classes rebuild the template from these flags (add_bos_token defaults on).
  const Json& cls = Field(tcfg, "tokenizer_class");
  if (cls == "LlamaTokenizer" || cls == "LlamaTokenizerFast") {
    add.bos = true;
    add.eos = false;
  }
  if (Field(tcfg, "add_bos_token").is_boolean()) add.bos = tcfg["add_bos_token"].get<bool>();
  if (Field(tcfg, "add_eos_token").is_boolean()) add.eos = tcfg["add_eos_token"].get<bool>();
  add.bos = add.bos && ids.bos >= 0;
  add.eos = add.eos && ids.eos >= 0;
  return add;
}

absl::StatusOr<std::string> ReadChatTemplate(const Json& tcfg, const std::string& dir) {
  const Json& t = Field(tcfg, "chat_template");
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array()) {
    for (const Json& named : t) {
      if (Field(named, "name") == "default" && Field(named, "template").is_string()) {
        return named["template"].get<std::string>();
      }
    }
    return absl::InvalidArgumentError(
        StrCat(dir, "/tokenizer_config.json: chat_template list has no \"default\" template"));
  }
  auto file = ReadWholeFile(dir + "/chat_template.jinja", 16ull << 20);
  if (file.ok()) return *file;
  if (!absl::IsNotFound(file.status())) return file.status();
  return std::string();
}

}  // namespace chorus::hf

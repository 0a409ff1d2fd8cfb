#include "chorus/model/hparams.h"

#include <algorithm>
#include <array>
#include <string_view>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

absl::StatusOr<int> GetInt(const GgufFile& f, const std::string& key, int min, int max) {
  CHORUS_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(key, static_cast<uint64_t>(max)));
  if (v < static_cast<uint64_t>(min)) {
    return absl::FailedPreconditionError(
        StrCat("gguf: metadata key '", key, "' = ", v, " is below the minimum ", min));
  }
  return static_cast<int>(v);
}

// "{arch}.*" keys that ReadModelConfig reads (and implements), or that do not change the math.
constexpr std::array<std::string_view, 17> kKnownArchKeys = {
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "attention.key_length",
    "attention.value_length",
    "rope.dimension_count",
    "rope.freq_base",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "rope.scaling.finetuned",  // informational
    "vocab_size",              // informational (token_embd.weight gives the vocabulary)
    "expert_count",            // accepted only when 0 (checked below)
};

bool IsKnownArchKey(std::string_view suffix) {
  return std::find(kKnownArchKeys.begin(), kKnownArchKeys.end(), suffix) != kKnownArchKeys.end() ||
         suffix == "expert_used_count" || suffix == "rope.scaling.attn_factor";
}

// Every "{arch}.*" key is implemented, harmless, or refused by name.
absl::Status CheckArchKeys(const GgufFile& f, const std::string& p) {
  for (const GgufKeyValue& kv : f.metadata()) {
    std::string_view key = kv.key;
    if (key.substr(0, p.size()) != p) continue;
    const std::string_view suffix = key.substr(p.size());
    if (!IsKnownArchKey(suffix)) {
      return absl::FailedPreconditionError(
          StrCat("gguf: metadata key '", key,
                 "' is not implemented by Chorus (it may change the model's math: sliding "
                 "window, softcapping, scales, experts ...); refusing to load rather than "
                 "ignoring it"));
    }
  }
  for (const char* k : {"expert_count", "expert_used_count"}) {
    if (f.Find(p + k) != nullptr) {
      CHORUS_ASSIGN_OR_RETURN(uint64_t v, f.GetUint(p + k, 1 << 20));
      if (v != 0) {
        return absl::FailedPreconditionError(StrCat("gguf: metadata key '", p, k, "' = ", v,
                                                    ": mixture-of-experts is not supported"));
      }
    }
  }
  return absl::OkStatus();
}

// rope.scaling.*: "none" and "linear" (exact: positions scaled by 1 / factor) are implemented;
// anything else (yarn, longrope, ...) is refused with the key and value.
absl::Status ReadRopeScaling(const GgufFile& f, const std::string& p, ModelConfig* c) {
  const std::string type_key = p + "rope.scaling.type";
  std::string_view type = "none";
  if (f.Find(type_key) != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(type, f.GetString(type_key));
  }
  const std::string attn_key = p + "rope.scaling.attn_factor";
  if (f.Find(attn_key) != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(double attn, f.GetFloat(attn_key));
    if (attn != 1.0) {
      return absl::FailedPreconditionError(
          StrCat("gguf: metadata key '", attn_key, "' = ", attn, " is not supported (only 1)"));
    }
  }
  if (type == "none") return absl::OkStatus();
  if (type != "linear") {
    return absl::FailedPreconditionError(
        StrCat("gguf: metadata key '", type_key, "' = '", type,
               "' is not supported (none, linear); refusing to load rather than ignoring it"));
  }
  const std::string factor_key = p + "rope.scaling.factor";
  if (f.Find(factor_key) == nullptr) {
    return absl::FailedPreconditionError(
        StrCat("gguf: '", type_key, "' is linear but '", factor_key, "' is missing"));
  }
  CHORUS_ASSIGN_OR_RETURN(double factor, f.GetFloat(factor_key));
  if (!(factor >= 1.0 && factor <= 1024.0)) {
    return absl::FailedPreconditionError(
        StrCat("gguf: metadata key '", factor_key, "' = ", factor, " is not in [1, 1024]"));
  }
  c->rope_freq_scale = static_cast<float>(1.0 / factor);
  return absl::OkStatus();
}

absl::Status ReadShape(const GgufFile& f, const std::string& p, ModelConfig* c) {
  CHORUS_ASSIGN_OR_RETURN(c->dim, GetInt(f, p + "embedding_length", 1, 1 << 16));
  CHORUS_ASSIGN_OR_RETURN(c->n_layers, GetInt(f, p + "block_count", 1, 1024));
  CHORUS_ASSIGN_OR_RETURN(c->n_heads, GetInt(f, p + "attention.head_count", 1, 1024));
  c->n_kv_heads = c->n_heads;
  if (f.Find(p + "attention.head_count_kv") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(c->n_kv_heads, GetInt(f, p + "attention.head_count_kv", 1, 1024));
  }
  CHORUS_ASSIGN_OR_RETURN(c->ffn_dim, GetInt(f, p + "feed_forward_length", 1, 1 << 20));
  CHORUS_ASSIGN_OR_RETURN(c->context_length, GetInt(f, p + "context_length", 1, 1 << 24));
  if (c->n_heads % c->n_kv_heads != 0) {
    return absl::FailedPreconditionError(StrCat("gguf: ", p, "attention.head_count ", c->n_heads,
                                                " is not a multiple of head_count_kv ",
                                                c->n_kv_heads));
  }
  if (f.Find(p + "attention.key_length") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(c->head_dim, GetInt(f, p + "attention.key_length", 2, 1024));
  } else if (c->dim % c->n_heads != 0) {
    return absl::FailedPreconditionError(StrCat("gguf: ", p, "embedding_length ", c->dim,
                                                " is not a multiple of head_count ", c->n_heads));
  } else {
    c->head_dim = c->dim / c->n_heads;
  }
  if (f.Find(p + "attention.value_length") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(int v, GetInt(f, p + "attention.value_length", 1, 1024));
    if (v != c->head_dim) {
      return absl::FailedPreconditionError(StrCat("gguf: ", p, "attention.value_length ", v,
                                                  " differs from key_length ", c->head_dim,
                                                  " (not supported)"));
    }
  }
  c->rope_dim = c->head_dim;
  if (f.Find(p + "rope.dimension_count") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(c->rope_dim, GetInt(f, p + "rope.dimension_count", 2, c->head_dim));
  }
  if (c->rope_dim % 2 != 0) {
    return absl::FailedPreconditionError(
        StrCat("gguf: ", p, "rope.dimension_count ", c->rope_dim, " is odd"));
  }
  return absl::OkStatus();
}

absl::Status ReadFloats(const GgufFile& f, const std::string& p, ModelConfig* c) {
  if (f.Find(p + "attention.layer_norm_rms_epsilon") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(double eps, f.GetFloat(p + "attention.layer_norm_rms_epsilon"));
    if (!(eps > 0 && eps < 1)) {
      return absl::FailedPreconditionError(
          StrCat("gguf: ", p, "attention.layer_norm_rms_epsilon ", eps, " is not in (0, 1)"));
    }
    c->norm_eps = static_cast<float>(eps);
  }
  if (f.Find(p + "rope.freq_base") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(double base, f.GetFloat(p + "rope.freq_base"));
    if (!(base > 1 && base < 1e12)) {
      return absl::FailedPreconditionError(
          StrCat("gguf: ", p, "rope.freq_base ", base, " is not in (1, 1e12)"));
    }
    c->rope_base = static_cast<float>(base);
  }
  return ReadRopeScaling(f, p, c);
}

}  // namespace

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& f) {
  ModelConfig c;
  CHORUS_ASSIGN_OR_RETURN(std::string_view arch, f.GetString("general.architecture"));
  c.arch = std::string(arch);
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "qwen3") {
    return absl::FailedPreconditionError(StrCat("gguf: general.architecture '", arch,
                                                "' is not supported (", kSupportedArchitectures,
                                                ")"));
  }
  const std::string p = c.arch + ".";
  CHORUS_RETURN_IF_ERROR(CheckArchKeys(f, p));
  CHORUS_RETURN_IF_ERROR(ReadShape(f, p, &c));
  CHORUS_RETURN_IF_ERROR(ReadFloats(f, p, &c));
  const GgufTensorInfo* embd = f.FindTensor("token_embd.weight");
  if (embd == nullptr) {
    return absl::FailedPreconditionError("gguf: missing tensor 'token_embd.weight'");
  }
  if (embd->n_dims != 2 || embd->ne[1] > (1 << 24)) {
    return absl::FailedPreconditionError("gguf: tensor 'token_embd.weight' must be [dim, vocab]");
  }
  c.vocab_size = static_cast<int>(embd->ne[1]);
  if (c.arch == "qwen2") {
    c.rope_style = RopeStyle::kHalves;
    c.qkv_bias = true;
  } else if (c.arch == "qwen3") {
    c.rope_style = RopeStyle::kHalves;
    c.qk_norm = true;
  }
  return c;
}

}  // namespace chorus

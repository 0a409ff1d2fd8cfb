#include "chorus/model/hparams.h"

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

}  // namespace

absl::StatusOr<ModelConfig> ReadModelConfig(const GgufFile& f) {
  ModelConfig c;
  CHORUS_ASSIGN_OR_RETURN(std::string_view arch, f.GetString("general.architecture"));
  c.arch = std::string(arch);
  if (c.arch != "llama" && c.arch != "qwen2") {
    return absl::FailedPreconditionError(
        StrCat("gguf: general.architecture '", arch, "' is not supported (llama, qwen2)"));
  }
  const std::string p = c.arch + ".";
  CHORUS_ASSIGN_OR_RETURN(c.dim, GetInt(f, p + "embedding_length", 1, 1 << 16));
  CHORUS_ASSIGN_OR_RETURN(c.n_layers, GetInt(f, p + "block_count", 1, 1024));
  CHORUS_ASSIGN_OR_RETURN(c.n_heads, GetInt(f, p + "attention.head_count", 1, 1024));
  c.n_kv_heads = c.n_heads;
  if (f.Find(p + "attention.head_count_kv") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(c.n_kv_heads, GetInt(f, p + "attention.head_count_kv", 1, 1024));
  }
  CHORUS_ASSIGN_OR_RETURN(c.ffn_dim, GetInt(f, p + "feed_forward_length", 1, 1 << 20));
  CHORUS_ASSIGN_OR_RETURN(c.context_length, GetInt(f, p + "context_length", 1, 1 << 24));
  if (c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0) {
    return absl::FailedPreconditionError(StrCat(
        "gguf: ", p, "embedding_length ", c.dim, " / head_count ", c.n_heads, " / head_count_kv ",
        c.n_kv_heads, " do not divide evenly"));
  }
  c.head_dim = c.dim / c.n_heads;
  c.rope_dim = c.head_dim;
  if (f.Find(p + "rope.dimension_count") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(c.rope_dim, GetInt(f, p + "rope.dimension_count", 2, c.head_dim));
  }
  if (c.rope_dim % 2 != 0) {
    return absl::FailedPreconditionError(
        StrCat("gguf: ", p, "rope.dimension_count ", c.rope_dim, " is odd"));
  }
  if (f.Find(p + "attention.layer_norm_rms_epsilon") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(double eps, f.GetFloat(p + "attention.layer_norm_rms_epsilon"));
    if (!(eps > 0 && eps < 1)) {
      return absl::FailedPreconditionError(
          StrCat("gguf: ", p, "attention.layer_norm_rms_epsilon ", eps, " is not in (0, 1)"));
    }
    c.norm_eps = static_cast<float>(eps);
  }
  if (f.Find(p + "rope.freq_base") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(double base, f.GetFloat(p + "rope.freq_base"));
    if (!(base > 1 && base < 1e12)) {
      return absl::FailedPreconditionError(
          StrCat("gguf: ", p, "rope.freq_base ", base, " is not in (1, 1e12)"));
    }
    c.rope_base = static_cast<float>(base);
  }
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
  }
  return c;
}

}  // namespace chorus

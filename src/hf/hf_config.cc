// config.json -> GGUF hyperparameter keys. Everything that changes the math is either mapped
// or refused by name; keys that do not (dropout, torch_dtype, use_cache, ...) are ignored.
#include <cmath>
#include <string_view>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/gguf/random_model.h"
#include "hf_internal.h"

namespace chorus::hf {
namespace {

struct ArchInfo {
  std::string_view hf;    // config.json "architectures"[0]
  std::string_view gguf;  // general.architecture
  bool permute_qk;
};
constexpr ArchInfo kArchs[] = {
    {"LlamaForCausalLM", "llama", true},
    {"MistralForCausalLM", "llama", true},
    {"Qwen2ForCausalLM", "qwen2", false},
    {"Qwen3ForCausalLM", "qwen3", false},
};

absl::Status Unsupported(std::string_view what, std::string_view key, const Json& value,
                         std::string_view detail) {
  return absl::FailedPreconditionError(StrCat(what, ": ", key, " = ", ShortJson(value),
                                              " is not supported", detail,
                                              "; refusing to load rather than ignoring it"));
}

absl::StatusOr<const ArchInfo*> FindArch(const Json& c, std::string_view what) {
  if (!c.contains("architectures") || !c["architectures"].is_array() ||
      c["architectures"].size() != 1 || !c["architectures"][0].is_string()) {
    return absl::InvalidArgumentError(
        StrCat(what, ": 'architectures' must be a list of one name (e.g. [\"LlamaForCausalLM\"])"));
  }
  const std::string name = c["architectures"][0].get<std::string>();
  for (const ArchInfo& a : kArchs) {
    if (a.hf == name) return &a;
  }
  return absl::FailedPreconditionError(
      StrCat(what, ": architecture '", name,
             "' is not supported (LlamaForCausalLM, "
             "MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)"));
}

// Options of these architectures that Chorus does not implement, refused when set.
absl::Status CheckUnsupportedOptions(const Json& c, const ArchInfo& a, std::string_view what) {
  if (Has(c, "hidden_act") && c["hidden_act"] != "silu") {
    return Unsupported(what, "hidden_act", c["hidden_act"], " (silu)");
  }
  for (const char* key : {"attention_bias", "mlp_bias"}) {
    if (a.gguf != "qwen2" && Has(c, key) && c[key] != false) {
      return Unsupported(what, key, c[key], " (false)");
    }
  }
  if (Has(c, "quantization_config")) {
    return Unsupported(what, "quantization_config", c["quantization_config"],
                       " (F32, F16 and BF16 weights only)");
  }
  for (const char* key : {"num_experts", "num_local_experts"}) {
    if (Has(c, key) && c[key] != 0) return Unsupported(what, key, c[key], " (dense models only)");
  }
  if (Has(c, "partial_rotary_factor") && c["partial_rotary_factor"] != 1) {
    return Unsupported(what, "partial_rotary_factor", c["partial_rotary_factor"], " (1)");
  }
  return absl::OkStatus();
}

// Sliding-window attention changes the math only for sequences longer than the window.
absl::Status CheckSlidingWindow(const Json& c, const ArchInfo& a, int64_t max_pos,
                                std::string_view what) {
  bool active;
  if (a.gguf == "llama") {
    // MistralConfig's default window is 4096 when the key is absent; Llama has none.
    active =
        a.hf == "MistralForCausalLM" && (!c.contains("sliding_window") || Has(c, "sliding_window"));
  } else {
    active = Has(c, "use_sliding_window") && c["use_sliding_window"] == true;
  }
  if (Has(c, "layer_types")) {
    for (const Json& t : c["layer_types"]) {
      if (t != "full_attention") return Unsupported(what, "layer_types", c["layer_types"], "");
    }
  }
  if (!active) return absl::OkStatus();
  int64_t window = 4096;
  if (Has(c, "sliding_window")) {
    CHORUS_ASSIGN_OR_RETURN(window, GetInt(c, "sliding_window", 1, INT64_MAX, what));
  }
  if (window < max_pos) {
    return absl::FailedPreconditionError(StrCat(
        what, ": sliding_window = ", window, " is smaller than max_position_embeddings = ", max_pos,
        ": sliding-window attention is not implemented; refusing to load"));
  }
  return absl::OkStatus();
}

// rope_scaling (or transformers 5's rope_parameters): none/default, linear, llama3.
absl::Status ConvertRope(const Json& c, const std::string& p, HfConfig* out, GgufWriter* w,
                         std::string_view what) {
  const char* key = Has(c, "rope_scaling") ? "rope_scaling" : "rope_parameters";
  const Json empty = Json::object();
  const Json& r = Has(c, key) ? c[key] : empty;
  if (!r.is_object()) {
    return absl::InvalidArgumentError(StrCat(what, ": ", key, " is not an object"));
  }
  double theta = 10000.0;
  if (Has(c, "rope_theta")) {
    CHORUS_ASSIGN_OR_RETURN(theta, GetNumber(c, "rope_theta", what));
  } else if (Has(r, "rope_theta")) {
    CHORUS_ASSIGN_OR_RETURN(theta, GetNumber(r, "rope_theta", what));
  }
  if (!(theta > 1 && theta < 1e12)) {
    return absl::InvalidArgumentError(StrCat(what, ": rope_theta ", theta, " is not in (1, 1e12)"));
  }
  w->SetF32(p + "rope.freq_base", static_cast<float>(theta));
  const char* type_key = Has(r, "rope_type") ? "rope_type" : "type";
  std::string type = "default";
  if (Has(r, type_key)) {
    CHORUS_ASSIGN_OR_RETURN(type, GetString(r, type_key, what));
  }
  const std::string rkey = StrCat(key, ".", type_key);
  if (type == "default") return absl::OkStatus();
  if (type != "linear" && type != "llama3") {
    return Unsupported(what, rkey, r[type_key], " (default, linear, llama3)");
  }
  CHORUS_ASSIGN_OR_RETURN(double factor, GetNumber(r, "factor", what));
  if (!(factor >= 1 && factor <= 1024)) {
    return absl::InvalidArgumentError(
        StrCat(what, ": ", key, ".factor ", factor, " is not in [1, 1024]"));
  }
  if (type == "linear") {
    w->SetString(p + "rope.scaling.type", "linear");
    w->SetF32(p + "rope.scaling.factor", static_cast<float>(factor));
    return absl::OkStatus();
  }
  // llama3: the per-pair divisors GGUF files store as rope_freqs.weight.
  double low = 1, high = 4, original = 8192;
  if (Has(r, "low_freq_factor")) {
    CHORUS_ASSIGN_OR_RETURN(low, GetNumber(r, "low_freq_factor", what));
  }
  if (Has(r, "high_freq_factor")) {
    CHORUS_ASSIGN_OR_RETURN(high, GetNumber(r, "high_freq_factor", what));
  }
  if (Has(r, "original_max_position_embeddings")) {
    CHORUS_ASSIGN_OR_RETURN(original, GetNumber(r, "original_max_position_embeddings", what));
  }
  if (!(low > 0 && high > low && original >= 1)) {
    return absl::InvalidArgumentError(StrCat(what, ": ", key,
                                             " needs 0 < low_freq_factor < "
                                             "high_freq_factor and original_max_position_"
                                             "embeddings >= 1"));
  }
  out->rope_freqs = Llama3RopeFreqs(out->head_dim, static_cast<float>(theta),
                                    static_cast<float>(factor), static_cast<float>(low),
                                    static_cast<float>(high), static_cast<float>(original));
  return absl::OkStatus();
}

// bos_token_id / eos_token_id: absent, null, one id or a list of ids.
absl::Status ReadIds(const Json& c, const char* key, std::string_view what,
                     std::vector<int64_t>* out) {
  if (!Has(c, key)) return absl::OkStatus();
  const Json& v = c[key];
  for (const Json& id : v.is_array() ? v : Json::array({v})) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(
          StrCat(what, ": ", key, " = ", ShortJson(v), " is not a token id or a list of them"));
    }
    out->push_back(id.get<int64_t>());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ReadConfigIds(const Json& c, const std::string& what, HfConfig* out) {
  if (!c.is_object()) return absl::InvalidArgumentError(StrCat(what, ": not a JSON object"));
  CHORUS_RETURN_IF_ERROR(ReadIds(c, "bos_token_id", what, &out->bos_ids));
  return ReadIds(c, "eos_token_id", what, &out->eos_ids);
}

absl::StatusOr<HfConfig> ConvertConfig(const Json& c, const std::string& what, GgufWriter* w) {
  if (!c.is_object()) return absl::InvalidArgumentError(StrCat(what, ": not a JSON object"));
  CHORUS_ASSIGN_OR_RETURN(const ArchInfo* arch, FindArch(c, what));
  CHORUS_RETURN_IF_ERROR(CheckUnsupportedOptions(c, *arch, what));
  HfConfig out;
  out.arch = std::string(arch->gguf);
  out.permute_qk = arch->permute_qk;
  const std::string p = out.arch + ".";
  CHORUS_ASSIGN_OR_RETURN(int64_t dim, GetInt(c, "hidden_size", 1, 1 << 16, what));
  CHORUS_ASSIGN_OR_RETURN(int64_t layers, GetInt(c, "num_hidden_layers", 1, 1024, what));
  CHORUS_ASSIGN_OR_RETURN(int64_t heads, GetInt(c, "num_attention_heads", 1, 1024, what));
  int64_t kv_heads = heads;
  if (Has(c, "num_key_value_heads")) {
    CHORUS_ASSIGN_OR_RETURN(kv_heads, GetInt(c, "num_key_value_heads", 1, 1024, what));
  }
  CHORUS_ASSIGN_OR_RETURN(int64_t ffn, GetInt(c, "intermediate_size", 1, 1 << 20, what));
  CHORUS_ASSIGN_OR_RETURN(int64_t max_pos, GetInt(c, "max_position_embeddings", 1, 1 << 24, what));
  CHORUS_ASSIGN_OR_RETURN(int64_t vocab, GetInt(c, "vocab_size", 1, 1 << 24, what));
  CHORUS_ASSIGN_OR_RETURN(double eps, GetNumber(c, "rms_norm_eps", what));
  int64_t head_dim = dim / heads;
  if (Has(c, "head_dim")) {
    CHORUS_ASSIGN_OR_RETURN(head_dim, GetInt(c, "head_dim", 2, 1024, what));
  } else if (dim % heads != 0) {
    return absl::InvalidArgumentError(
        StrCat(what, ": hidden_size ", dim, " is not a multiple of num_attention_heads ", heads));
  }
  if (head_dim % 2 != 0) {
    return absl::InvalidArgumentError(StrCat(what, ": head size ", head_dim, " is odd"));
  }
  out.n_layers = static_cast<int>(layers);
  out.n_heads = static_cast<int>(heads);
  out.n_kv_heads = static_cast<int>(kv_heads);
  out.head_dim = static_cast<int>(head_dim);
  out.vocab_size = static_cast<int>(vocab);
  if (Has(c, "tie_word_embeddings")) {
    CHORUS_ASSIGN_OR_RETURN(out.tied_embeddings, GetBool(c, "tie_word_embeddings", what));
  }
  CHORUS_RETURN_IF_ERROR(CheckSlidingWindow(c, *arch, max_pos, what));
  CHORUS_RETURN_IF_ERROR(ReadConfigIds(c, what, &out));

  w->SetString("general.architecture", out.arch);
  w->SetU32(p + "context_length", static_cast<uint32_t>(max_pos));
  w->SetU32(p + "embedding_length", static_cast<uint32_t>(dim));
  w->SetU32(p + "block_count", static_cast<uint32_t>(layers));
  w->SetU32(p + "feed_forward_length", static_cast<uint32_t>(ffn));
  w->SetU32(p + "attention.head_count", static_cast<uint32_t>(heads));
  w->SetU32(p + "attention.head_count_kv", static_cast<uint32_t>(kv_heads));
  w->SetF32(p + "attention.layer_norm_rms_epsilon", static_cast<float>(eps));
  if (Has(c, "head_dim")) {
    w->SetU32(p + "attention.key_length", static_cast<uint32_t>(head_dim));
    w->SetU32(p + "attention.value_length", static_cast<uint32_t>(head_dim));
  }
  CHORUS_RETURN_IF_ERROR(ConvertRope(c, p, &out, w, what));
  return out;
}

}  // namespace chorus::hf

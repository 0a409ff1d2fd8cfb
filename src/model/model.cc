#include "chorus/model/model.h"

#include <filesystem>
#include <set>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/hf/hf_model.h"

namespace chorus {
namespace {

// Loads tensor `name` and checks its shape: ne0 = input features, ne1 = rows (0 for 1-D).
absl::StatusOr<WeightTensor> LoadChecked(const GgufFile& f, Backend* backend,
                                         const std::string& name, int64_t ne0, int64_t ne1) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr)
    return absl::FailedPreconditionError(StrCat("gguf: missing tensor '", name, "'"));
  const int want_dims = ne1 == 0 ? 1 : 2;
  if (t->n_dims != want_dims || t->ne[0] != ne0 || (ne1 != 0 && t->ne[1] != ne1)) {
    std::string have;
    for (int d = 0; d < t->n_dims; ++d) have += StrCat(d ? ", " : "", t->ne[d]);
    return absl::FailedPreconditionError(StrCat("gguf: tensor '", name, "' has shape [", have,
                                                "], expected [", ne0,
                                                ne1 ? StrCat(", ", ne1) : std::string(), "]"));
  }
  if (want_dims == 1 && t->type != GgmlType::kF32) {
    return absl::FailedPreconditionError(
        StrCat("gguf: tensor '", name, "' has type ", TypeName(t->type), ", expected F32"));
  }
  return backend->LoadWeight(*t);
}

// Tensors some converters write that carry nothing the forward pass needs: old llama
// conversions stored the rotary inverse frequencies (derived from rope.freq_base) per layer.
bool SafeToIgnore(std::string_view name) {
  constexpr std::string_view kRotEmbd = ".attn_rot_embd";
  return name.size() > kRotEmbd.size() && name.substr(name.size() - kRotEmbd.size()) == kRotEmbd;
}

// Every tensor of the file must have been loaded or be safe to ignore.
absl::Status CheckAllTensorsUsed(const GgufFile& f, const std::set<std::string>& used,
                                 const std::string& arch) {
  for (const GgufTensorInfo& t : f.tensors()) {
    if (used.count(t.name) == 0 && !SafeToIgnore(t.name)) {
      return absl::FailedPreconditionError(
          StrCat("gguf: tensor '", t.name, "' is not used by Chorus's ", arch,
                 " model; refusing to load a file whose math it would not fully implement"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path, Backend* backend) {
  // A Hugging Face directory becomes the same in-memory GGUF (src/hf/).
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec) && !IsHfModelDirectory(path)) {
    return absl::FailedPreconditionError(
        StrCat(path,
               ": a directory without config.json (a Hugging Face model directory holds "
               "config.json, model.safetensors or its shards, and tokenizer.json)"));
  }
  auto opened = IsHfModelDirectory(path) ? OpenHfModel(path) : GgufFile::Open(path);
  CHORUS_ASSIGN_OR_RETURN(auto file, std::move(opened));
  auto model = FromFile(std::move(file), backend);
  if (!model.ok()) {
    return absl::Status(model.status().code(), StrCat(path, ": ", model.status().message()));
  }
  return model;
}

absl::StatusOr<std::unique_ptr<Model>> Model::FromFile(std::unique_ptr<GgufFile> file,
                                                       Backend* backend) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = std::move(file);
  const GgufFile& f = *m->file_;
  CHORUS_ASSIGN_OR_RETURN(m->config_, ReadModelConfig(f));
  CHORUS_ASSIGN_OR_RETURN(m->tokenizer_, Tokenizer::FromGguf(f));
  const ModelConfig& c = m->config_;
  if (m->tokenizer_->vocab_size() != c.vocab_size) {
    return absl::FailedPreconditionError(StrCat("gguf: tokenizer has ", m->tokenizer_->vocab_size(),
                                                " tokens but token_embd.weight has ", c.vocab_size,
                                                " rows"));
  }
  ModelWeights& w = m->weights_;
  std::set<std::string> used;
  auto load = [&](const std::string& name, int64_t ne0, int64_t ne1,
                  WeightTensor* out) -> absl::Status {
    CHORUS_ASSIGN_OR_RETURN(*out, LoadChecked(f, backend, name, ne0, ne1));
    used.insert(name);
    return absl::OkStatus();
  };
  CHORUS_RETURN_IF_ERROR(load("token_embd.weight", c.dim, c.vocab_size, &w.token_embd));
  CHORUS_RETURN_IF_ERROR(load("output_norm.weight", c.dim, 0, &w.output_norm));
  if (f.FindTensor("output.weight") != nullptr) {
    CHORUS_RETURN_IF_ERROR(load("output.weight", c.dim, c.vocab_size, &w.output));
  } else {
    w.output = w.token_embd;  // tied embeddings
  }
  if (f.FindTensor("rope_freqs.weight") != nullptr) {
    CHORUS_RETURN_IF_ERROR(load("rope_freqs.weight", c.rope_dim / 2, 0, &w.rope_freqs));
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = StrCat("blk.", l, ".");
    LayerWeights L;
    CHORUS_RETURN_IF_ERROR(load(p + "attn_norm.weight", c.dim, 0, &L.attn_norm));
    CHORUS_RETURN_IF_ERROR(load(p + "attn_q.weight", c.dim, c.q_dim(), &L.wq));
    CHORUS_RETURN_IF_ERROR(load(p + "attn_k.weight", c.dim, c.kv_dim(), &L.wk));
    CHORUS_RETURN_IF_ERROR(load(p + "attn_v.weight", c.dim, c.kv_dim(), &L.wv));
    CHORUS_RETURN_IF_ERROR(load(p + "attn_output.weight", c.q_dim(), c.dim, &L.wo));
    if (c.qkv_bias) {
      CHORUS_RETURN_IF_ERROR(load(p + "attn_q.bias", c.q_dim(), 0, &L.bq));
      CHORUS_RETURN_IF_ERROR(load(p + "attn_k.bias", c.kv_dim(), 0, &L.bk));
      CHORUS_RETURN_IF_ERROR(load(p + "attn_v.bias", c.kv_dim(), 0, &L.bv));
    }
    if (c.qk_norm) {
      CHORUS_RETURN_IF_ERROR(load(p + "attn_q_norm.weight", c.head_dim, 0, &L.q_norm));
      CHORUS_RETURN_IF_ERROR(load(p + "attn_k_norm.weight", c.head_dim, 0, &L.k_norm));
    }
    CHORUS_RETURN_IF_ERROR(load(p + "ffn_norm.weight", c.dim, 0, &L.ffn_norm));
    CHORUS_RETURN_IF_ERROR(load(p + "ffn_gate.weight", c.dim, c.ffn_dim, &L.gate));
    CHORUS_RETURN_IF_ERROR(load(p + "ffn_up.weight", c.dim, c.ffn_dim, &L.up));
    CHORUS_RETURN_IF_ERROR(load(p + "ffn_down.weight", c.ffn_dim, c.dim, &L.down));
    w.layers.push_back(L);
  }
  CHORUS_RETURN_IF_ERROR(CheckAllTensorsUsed(f, used, c.arch));
  return m;
}

}  // namespace chorus

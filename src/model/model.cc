#include "chorus/model/model.h"

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

// Loads tensor `name` and checks its shape: ne0 = input features, ne1 = rows (0 for 1-D).
absl::StatusOr<WeightTensor> LoadChecked(const GgufFile& f, Backend* backend,
                                         const std::string& name, int64_t ne0, int64_t ne1) {
  const GgufTensorInfo* t = f.FindTensor(name);
  if (t == nullptr) return absl::FailedPreconditionError(StrCat("gguf: missing tensor '", name, "'"));
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

}  // namespace

absl::StatusOr<std::unique_ptr<Model>> Model::Load(const std::string& path, Backend* backend) {
  CHORUS_ASSIGN_OR_RETURN(auto file, GgufFile::Open(path));
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
    return absl::FailedPreconditionError(
        StrCat("gguf: tokenizer has ", m->tokenizer_->vocab_size(),
               " tokens but token_embd.weight has ", c.vocab_size, " rows"));
  }
  ModelWeights& w = m->weights_;
  CHORUS_ASSIGN_OR_RETURN(w.token_embd, LoadChecked(f, backend, "token_embd.weight", c.dim, c.vocab_size));
  CHORUS_ASSIGN_OR_RETURN(w.output_norm, LoadChecked(f, backend, "output_norm.weight", c.dim, 0));
  if (f.FindTensor("output.weight") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(w.output, LoadChecked(f, backend, "output.weight", c.dim, c.vocab_size));
  } else {
    w.output = w.token_embd;  // tied embeddings
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = StrCat("blk.", l, ".");
    LayerWeights L;
    CHORUS_ASSIGN_OR_RETURN(L.attn_norm, LoadChecked(f, backend, p + "attn_norm.weight", c.dim, 0));
    CHORUS_ASSIGN_OR_RETURN(L.wq, LoadChecked(f, backend, p + "attn_q.weight", c.dim, c.q_dim()));
    CHORUS_ASSIGN_OR_RETURN(L.wk, LoadChecked(f, backend, p + "attn_k.weight", c.dim, c.kv_dim()));
    CHORUS_ASSIGN_OR_RETURN(L.wv, LoadChecked(f, backend, p + "attn_v.weight", c.dim, c.kv_dim()));
    CHORUS_ASSIGN_OR_RETURN(L.wo, LoadChecked(f, backend, p + "attn_output.weight", c.q_dim(), c.dim));
    if (c.qkv_bias) {
      CHORUS_ASSIGN_OR_RETURN(L.bq, LoadChecked(f, backend, p + "attn_q.bias", c.q_dim(), 0));
      CHORUS_ASSIGN_OR_RETURN(L.bk, LoadChecked(f, backend, p + "attn_k.bias", c.kv_dim(), 0));
      CHORUS_ASSIGN_OR_RETURN(L.bv, LoadChecked(f, backend, p + "attn_v.bias", c.kv_dim(), 0));
    }
    CHORUS_ASSIGN_OR_RETURN(L.ffn_norm, LoadChecked(f, backend, p + "ffn_norm.weight", c.dim, 0));
    CHORUS_ASSIGN_OR_RETURN(L.gate, LoadChecked(f, backend, p + "ffn_gate.weight", c.dim, c.ffn_dim));
    CHORUS_ASSIGN_OR_RETURN(L.up, LoadChecked(f, backend, p + "ffn_up.weight", c.dim, c.ffn_dim));
    CHORUS_ASSIGN_OR_RETURN(L.down, LoadChecked(f, backend, p + "ffn_down.weight", c.ffn_dim, c.dim));
    w.layers.push_back(L);
  }
  return m;
}

}  // namespace chorus

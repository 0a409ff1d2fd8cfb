#include "chorus/model/transformer.h"

#include <algorithm>
#include <cmath>

#include "chorus/backends/communicator.h"
#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {

Transformer::Transformer(const Model* model, Backend* backend, KvCache* kv)
    : config_(&model->config()), weights_(&model->weights()), backend_(backend), kv_(kv) {}

Transformer::Transformer(const ModelConfig* config, const ModelWeights* weights, Backend* backend,
                         KvCache* kv, Communicator* comm)
    : config_(config), weights_(weights), comm_(comm), backend_(backend), kv_(kv) {}

absl::Status Transformer::Validate(const ForwardBatch& b) const {
  const ModelConfig& c = *config_;
  const size_t n = b.tokens.size();
  if (n == 0) return absl::InvalidArgumentError("forward: empty batch");
  if (b.positions.size() != n || b.seq_of_token.size() != n) {
    return absl::InvalidArgumentError("forward: tokens, positions and seq_of_token differ in size");
  }
  if (b.max_blocks_per_seq <= 0 || b.block_tables.size() % b.max_blocks_per_seq != 0) {
    return absl::InvalidArgumentError(
        "forward: block_tables is not [num_seqs, max_blocks_per_seq]");
  }
  const int64_t num_seqs = static_cast<int64_t>(b.block_tables.size()) / b.max_blocks_per_seq;
  const int64_t capacity = static_cast<int64_t>(b.max_blocks_per_seq) * kv_->block_size();
  for (size_t i = 0; i < n; ++i) {
    if (b.tokens[i] < 0 || b.tokens[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(StrCat("forward: token ", b.tokens[i], " at row ", i,
                                               " is outside [0, ", c.vocab_size, ")"));
    }
    if (b.positions[i] < 0 || b.positions[i] >= c.context_length || b.positions[i] >= capacity) {
      return absl::InvalidArgumentError(StrCat("forward: position ", b.positions[i], " at row ", i,
                                               " is outside the context or its blocks"));
    }
    if (b.seq_of_token[i] < 0 || b.seq_of_token[i] >= num_seqs) {
      return absl::InvalidArgumentError(StrCat("forward: seq_of_token ", b.seq_of_token[i],
                                               " at row ", i, " is outside [0, ", num_seqs, ")"));
    }
    // Every block this token reads (positions 0..pos) must be a valid block id.
    const int32_t* table = b.block_tables.data() + b.seq_of_token[i] * b.max_blocks_per_seq;
    for (int blk = 0; blk <= b.positions[i] / kv_->block_size(); ++blk) {
      if (table[blk] < 0 || table[blk] >= kv_->num_blocks()) {
        return absl::InvalidArgumentError(StrCat("forward: block id ", table[blk], " of sequence ",
                                                 b.seq_of_token[i], " is out of range"));
      }
    }
  }
  for (int32_t r : b.logit_rows) {
    if (r < 0 || static_cast<size_t>(r) >= n) {
      return absl::InvalidArgumentError(StrCat("forward: logit row ", r, " is outside the batch"));
    }
  }
  return absl::OkStatus();
}

absl::Status Transformer::EnsureScratch(int num_tokens) {
  if (num_tokens <= scratch_tokens_) return absl::OkStatus();
  const ModelConfig& c = *config_;
  const size_t n = static_cast<size_t>(std::max(num_tokens, 16));
  auto alloc = [&](std::unique_ptr<BackendBuffer>* buf, size_t width) -> absl::Status {
    CHORUS_ASSIGN_OR_RETURN(*buf, backend_->Alloc(n * width * sizeof(float)));
    return absl::OkStatus();
  };
  const size_t wide = std::max<size_t>(c.dim, c.q_dim());
  CHORUS_RETURN_IF_ERROR(alloc(&x_, c.dim));
  CHORUS_RETURN_IF_ERROR(alloc(&xn_, wide));
  CHORUS_RETURN_IF_ERROR(alloc(&q_, c.q_dim()));
  CHORUS_RETURN_IF_ERROR(alloc(&k_, c.kv_dim()));
  CHORUS_RETURN_IF_ERROR(alloc(&v_, c.kv_dim()));
  CHORUS_RETURN_IF_ERROR(alloc(&att_, c.q_dim()));
  CHORUS_RETURN_IF_ERROR(alloc(&proj_, c.dim));
  CHORUS_RETURN_IF_ERROR(alloc(&gate_, c.ffn_dim));
  CHORUS_RETURN_IF_ERROR(alloc(&up_, c.ffn_dim));
  CHORUS_RETURN_IF_ERROR(alloc(&logits_, c.vocab_size));
  scratch_tokens_ = static_cast<int>(n);
  return absl::OkStatus();
}

absl::Status Transformer::AllReduce(float* data, int64_t count) {
  if (comm_ == nullptr) return absl::OkStatus();
  return backend_->AllReduceSum(*comm_, data, count);
}

absl::Status Transformer::Run(const ForwardBatch& b) {
  CHORUS_RETURN_IF_ERROR(Validate(b));
  const int n = static_cast<int>(b.tokens.size());
  CHORUS_RETURN_IF_ERROR(EnsureScratch(n));
  const ModelConfig& c = *config_;
  const ModelWeights& w = *weights_;
  Backend& be = *backend_;

  AttentionLayout layout;
  layout.num_tokens = n;
  layout.positions = b.positions.data();
  layout.seq_of_token = b.seq_of_token.data();
  layout.block_tables = b.block_tables.data();
  layout.max_blocks_per_seq = b.max_blocks_per_seq;
  layout.block_size = kv_->block_size();

  float* x = x_->f32();        // [n, dim] residual stream
  float* xn = xn_->f32();      // [n, dim] normalized input / [n, ffn] SwiGLU output
  float* q = q_->f32();        // [n, q_dim]
  float* k = k_->f32();        // [n, kv_dim]
  float* v = v_->f32();        // [n, kv_dim]
  float* att = att_->f32();    // [n, q_dim]
  float* proj = proj_->f32();  // [n, dim]
  float* gate = gate_->f32();  // [n, ffn]
  float* up = up_->f32();      // [n, ffn]
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  RopeConfig rope;
  rope.rope_dim = c.rope_dim;
  rope.freq_base = c.rope_base;
  rope.freq_scale = c.rope_freq_scale;
  rope.freq_factors = static_cast<const float*>(w.rope_freqs.data);
  rope.style = c.rope_style;

  be.BeginForward(b.tokens.data(), layout, b.logit_rows.data(),
                  static_cast<int>(b.logit_rows.size()));
  be.Embed(w.token_embd, b.tokens.data(), n, x);
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    be.RmsNorm(x, L.attn_norm, n, c.dim, c.norm_eps, xn);
    be.MatMul(L.wq, xn, n, q);
    be.MatMul(L.wk, xn, n, k);
    be.MatMul(L.wv, xn, n, v);
    if (c.qkv_bias) {
      be.AddBias(q, L.bq, n);
      be.AddBias(k, L.bk, n);
      be.AddBias(v, L.bv, n);
    }
    if (c.qk_norm) {  // qwen3: RMSNorm over each head of q and k
      be.RmsNorm(q, L.q_norm, n * c.n_heads, c.head_dim, c.norm_eps, q);
      be.RmsNorm(k, L.k_norm, n * c.n_kv_heads, c.head_dim, c.norm_eps, k);
    }
    be.Rope(q, b.positions.data(), n, c.n_heads, c.head_dim, rope);
    be.Rope(k, b.positions.data(), n, c.n_kv_heads, c.head_dim, rope);
    be.KvWrite(k, v, layout, c.kv_dim(), kv_->k(l), kv_->v(l));
    be.Attention(q, kv_->k(l), kv_->v(l), layout, c.n_heads, c.n_kv_heads, c.head_dim, scale, att);
    be.MatMul(L.wo, att, n, proj);
    CHORUS_RETURN_IF_ERROR(AllReduce(proj, static_cast<int64_t>(n) * c.dim));
    be.Add(x, proj, static_cast<int64_t>(n) * c.dim);

    be.RmsNorm(x, L.ffn_norm, n, c.dim, c.norm_eps, xn);
    be.MatMul(L.gate, xn, n, gate);
    be.MatMul(L.up, xn, n, up);
    be.SwiGlu(gate, up, n, c.ffn_dim, gate);
    be.MatMul(L.down, gate, n, proj);
    CHORUS_RETURN_IF_ERROR(AllReduce(proj, static_cast<int64_t>(n) * c.dim));
    be.Add(x, proj, static_cast<int64_t>(n) * c.dim);
  }

  const int m = static_cast<int>(b.logit_rows.size());
  if (m == 0) {
    be.Synchronize();
    return be.TakeError();
  }
  be.GatherRows(x, b.logit_rows.data(), m, c.dim, proj);
  be.RmsNorm(proj, w.output_norm, m, c.dim, c.norm_eps, xn);
  be.MatMul(w.output, xn, m, logits_->f32());
  return absl::OkStatus();  // the logits stay in backend memory
}

absl::Status Transformer::Forward(const ForwardBatch& b, std::vector<float>* logits) {
  CHORUS_RETURN_IF_ERROR(Run(b));
  logits->resize(b.logit_rows.size() * static_cast<size_t>(config_->vocab_size));
  if (!logits->empty())
    backend_->CopyToHost(logits_->f32(), logits->data(), logits->size() * sizeof(float));
  backend_->Synchronize();
  return backend_->TakeError();
}

absl::Status Transformer::ForwardSampled(const ForwardBatch& b,
                                         const std::vector<RowSampling>& draws,
                                         const std::vector<int32_t>& host_rows,
                                         std::vector<float>* host_logits,
                                         std::vector<SampledToken>* sampled) {
  const int m = static_cast<int>(b.logit_rows.size());
  for (int32_t r : host_rows) {
    if (r < 0 || r >= m) {
      return absl::InvalidArgumentError(
          StrCat("forward: host logits row ", r, " is outside [0, ", m, ")"));
    }
  }
  CHORUS_RETURN_IF_ERROR(Run(b));
  const size_t vocab = static_cast<size_t>(config_->vocab_size);
  sampled->clear();
  if (!draws.empty()) {
    CHORUS_RETURN_IF_ERROR(
        backend_->SampleRows(logits_->f32(), m, config_->vocab_size, draws, sampled));
  }
  host_logits->resize(host_rows.size() * vocab);
  for (size_t i = 0; i < host_rows.size(); ++i) {
    backend_->CopyToHost(logits_->f32() + host_rows[i] * vocab, host_logits->data() + i * vocab,
                         vocab * sizeof(float));
  }
  backend_->Synchronize();
  return backend_->TakeError();
}

}  // namespace chorus

#include "chorus/model/tensor_parallel.h"

#include <cstring>
#include <thread>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"

namespace chorus {
namespace {

class Slicer {
 public:
  Slicer(const GgufFile& file, Backend* backend, std::vector<std::string>* storage)
      : file_(file), backend_(backend), storage_(storage) {}

  absl::StatusOr<WeightTensor> Whole(const std::string& name) {
    CHORUS_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Find(name));
    return backend_->LoadWeight(*t);
  }
  // Output rows [r0, r1) (or elements of a 1-D tensor).
  absl::StatusOr<WeightTensor> Rows(const std::string& name, int64_t r0, int64_t r1) {
    CHORUS_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Find(name));
    if (t->n_dims == 1) return Cols(name, r0, r1);
    const int64_t row_bytes = t->num_bytes / t->ne[1];
    std::string bytes(reinterpret_cast<const char*>(t->data) + r0 * row_bytes,
                      (r1 - r0) * row_bytes);
    return Load(*t, t->ne[0], r1 - r0, std::move(bytes));
  }
  // Input columns [c0, c1) of every row.
  absl::StatusOr<WeightTensor> Cols(const std::string& name, int64_t c0, int64_t c1) {
    CHORUS_ASSIGN_OR_RETURN(const GgufTensorInfo* t, Find(name));
    auto traits = GetTypeTraits(static_cast<uint32_t>(t->type));
    if (c0 % traits->block_size != 0 || c1 % traits->block_size != 0) {
      return absl::FailedPreconditionError(StrCat("tensor parallel: tensor '", name, "' columns [",
                                                  c0, ", ", c1, ") do not align with the ",
                                                  traits->name, " block of ", traits->block_size));
    }
    const int64_t rows = t->n_dims == 2 ? t->ne[1] : 1;
    const int64_t row_bytes = t->num_bytes / rows;
    const int64_t b0 = c0 / traits->block_size * traits->type_size;
    const int64_t b1 = c1 / traits->block_size * traits->type_size;
    std::string bytes;
    bytes.reserve((b1 - b0) * rows);
    for (int64_t r = 0; r < rows; ++r) {
      bytes.append(reinterpret_cast<const char*>(t->data) + r * row_bytes + b0, b1 - b0);
    }
    return Load(*t, c1 - c0, t->n_dims == 2 ? rows : 0, std::move(bytes));
  }

 private:
  absl::StatusOr<const GgufTensorInfo*> Find(const std::string& name) {
    const GgufTensorInfo* t = file_.FindTensor(name);
    if (t == nullptr)
      return absl::FailedPreconditionError(StrCat("gguf: missing tensor '", name, "'"));
    return t;
  }
  absl::StatusOr<WeightTensor> Load(const GgufTensorInfo& t, int64_t cols, int64_t rows,
                                    std::string bytes) {
    storage_->push_back(std::move(bytes));
    GgufTensorInfo s;
    s.name = t.name;
    s.type = t.type;
    s.n_dims = rows > 0 ? 2 : 1;
    s.ne[0] = cols;
    s.ne[1] = rows > 0 ? rows : 1;
    s.num_elements = cols * s.ne[1];
    s.num_bytes = static_cast<int64_t>(storage_->back().size());
    s.data = reinterpret_cast<const uint8_t*>(storage_->back().data());
    return backend_->LoadWeight(s);
  }
  const GgufFile& file_;
  Backend* backend_;
  std::vector<std::string>* storage_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ModelShard>> ModelShard::Create(const Model& model, int rank,
                                                               int world, Backend* backend) {
  const ModelConfig& c = model.config();
  if (world < 1 || rank < 0 || rank >= world || c.n_heads % world != 0 ||
      c.n_kv_heads % world != 0 || c.ffn_dim % world != 0) {
    return absl::FailedPreconditionError(StrCat("tensor parallel: ", world, " ranks do not divide ",
                                                c.n_heads, " heads, ", c.n_kv_heads,
                                                " KV heads and FFN width ", c.ffn_dim));
  }
  std::unique_ptr<ModelShard> s(new ModelShard());
  s->storage_.reserve(16 * c.n_layers + 8);  // strings must not move: weights point into them
  ModelConfig& lc = s->config_;
  lc = c;
  lc.n_heads = c.n_heads / world;
  lc.n_kv_heads = c.n_kv_heads / world;
  lc.ffn_dim = c.ffn_dim / world;
  const int64_t q0 = int64_t{rank} * lc.q_dim(), q1 = q0 + lc.q_dim();
  const int64_t k0 = int64_t{rank} * lc.kv_dim(), k1 = k0 + lc.kv_dim();
  const int64_t f0 = int64_t{rank} * lc.ffn_dim, f1 = f0 + lc.ffn_dim;
  Slicer sl(model.file(), backend, &s->storage_);
  ModelWeights& w = s->weights_;
  CHORUS_ASSIGN_OR_RETURN(w.token_embd, sl.Whole("token_embd.weight"));
  CHORUS_ASSIGN_OR_RETURN(w.output_norm, sl.Whole("output_norm.weight"));
  if (model.file().FindTensor("output.weight") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(w.output, sl.Whole("output.weight"));
  } else {
    w.output = w.token_embd;
  }
  if (model.file().FindTensor("rope_freqs.weight") != nullptr) {
    CHORUS_ASSIGN_OR_RETURN(w.rope_freqs, sl.Whole("rope_freqs.weight"));
  }
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = StrCat("blk.", l, ".");
    LayerWeights L;
    CHORUS_ASSIGN_OR_RETURN(L.attn_norm, sl.Whole(p + "attn_norm.weight"));
    CHORUS_ASSIGN_OR_RETURN(L.wq, sl.Rows(p + "attn_q.weight", q0, q1));
    CHORUS_ASSIGN_OR_RETURN(L.wk, sl.Rows(p + "attn_k.weight", k0, k1));
    CHORUS_ASSIGN_OR_RETURN(L.wv, sl.Rows(p + "attn_v.weight", k0, k1));
    if (c.qkv_bias) {
      CHORUS_ASSIGN_OR_RETURN(L.bq, sl.Rows(p + "attn_q.bias", q0, q1));
      CHORUS_ASSIGN_OR_RETURN(L.bk, sl.Rows(p + "attn_k.bias", k0, k1));
      CHORUS_ASSIGN_OR_RETURN(L.bv, sl.Rows(p + "attn_v.bias", k0, k1));
    }
    if (c.qk_norm) {  // per-head weights: every rank holds them whole
      CHORUS_ASSIGN_OR_RETURN(L.q_norm, sl.Whole(p + "attn_q_norm.weight"));
      CHORUS_ASSIGN_OR_RETURN(L.k_norm, sl.Whole(p + "attn_k_norm.weight"));
    }
    CHORUS_ASSIGN_OR_RETURN(L.wo, sl.Cols(p + "attn_output.weight", q0, q1));
    CHORUS_ASSIGN_OR_RETURN(L.ffn_norm, sl.Whole(p + "ffn_norm.weight"));
    CHORUS_ASSIGN_OR_RETURN(L.gate, sl.Rows(p + "ffn_gate.weight", f0, f1));
    CHORUS_ASSIGN_OR_RETURN(L.up, sl.Rows(p + "ffn_up.weight", f0, f1));
    CHORUS_ASSIGN_OR_RETURN(L.down, sl.Cols(p + "ffn_down.weight", f0, f1));
    w.layers.push_back(L);
  }
  return s;
}

absl::StatusOr<std::unique_ptr<TensorParallelRunner>> TensorParallelRunner::Create(
    const Model& model, std::vector<Backend*> backends,
    std::vector<std::unique_ptr<Communicator>> comms, int kv_blocks, int block_size) {
  const int world = static_cast<int>(backends.size());
  if (world < 1 || comms.size() != backends.size()) {
    return absl::InvalidArgumentError(
        "tensor parallel: need one backend and one communicator per rank");
  }
  std::unique_ptr<TensorParallelRunner> tp(new TensorParallelRunner());
  tp->ranks_.resize(world);
  for (int r = 0; r < world; ++r) {
    Rank& rk = tp->ranks_[r];
    CHORUS_ASSIGN_OR_RETURN(rk.shard, ModelShard::Create(model, r, world, backends[r]));
    CHORUS_ASSIGN_OR_RETURN(
        rk.kv, KvCache::Create(backends[r], rk.shard->config(), kv_blocks, block_size));
    rk.comm = std::move(comms[r]);
    rk.transformer = std::make_unique<Transformer>(&rk.shard->config(), &rk.shard->weights(),
                                                   backends[r], rk.kv.get(), rk.comm.get());
  }
  return tp;
}

absl::Status TensorParallelRunner::RunAll(const ForwardBatch& batch,
                                          const std::function<absl::Status(Transformer&)>& rank0) {
  std::vector<absl::Status> status(ranks_.size());
  std::vector<std::thread> threads;
  // A rank that fails may return before an all-reduce the others wait in: it aborts the group
  // so they return too (and the runner reports the first error instead of hanging).
  for (size_t r = 1; r < ranks_.size(); ++r) {
    threads.emplace_back([&, r] {
      status[r] = ranks_[r].transformer->Forward(batch, &ranks_[r].logits);
      if (!status[r].ok()) ranks_[r].comm->Abort();
    });
  }
  status[0] = rank0(*ranks_[0].transformer);
  if (!status[0].ok()) ranks_[0].comm->Abort();
  for (auto& t : threads) t.join();
  // The failing rank's own error first: the others only report the abort it caused.
  for (const auto& s : status) {
    if (!s.ok() && !absl::IsAborted(s)) return s;
  }
  for (const auto& s : status) CHORUS_RETURN_IF_ERROR(s);
  return absl::OkStatus();
}

absl::Status TensorParallelRunner::Forward(const ForwardBatch& batch, std::vector<float>* logits) {
  return RunAll(batch, [&](Transformer& t) { return t.Forward(batch, logits); });
}

absl::Status TensorParallelRunner::ForwardSampled(const ForwardBatch& batch,
                                                  const std::vector<RowSampling>& draws,
                                                  const std::vector<int32_t>& host_rows,
                                                  std::vector<float>* host_logits,
                                                  std::vector<SampledToken>* sampled) {
  return RunAll(batch, [&](Transformer& t) {
    return t.ForwardSampled(batch, draws, host_rows, host_logits, sampled);
  });
}

}  // namespace chorus

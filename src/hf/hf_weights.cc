// safetensors files of a directory -> GGUF tensors. 2-D weights keep pointing into the
// mappings (safetensors [out, in] row-major is GGUF's ne = {in, out}); only llama/mistral q and
// k (rows permuted), 1-D tensors (converted to F32, as GGUF stores norms and biases) and
// misaligned tensors are copied.
#include <unistd.h>

#include <cstring>
#include <regex>
#include <set>

#include "chorus/core/status.h"
#include "chorus/core/str_cat.h"
#include "chorus/gguf/ggml_types.h"
#include "hf_internal.h"

namespace chorus::hf {
namespace {

absl::Status AddFile(std::unique_ptr<SafetensorsFile> f, HfWeights* w) {
  for (const SafetensorsTensor& t : f->tensors()) {
    auto [it, inserted] = w->by_name.emplace(t.name, HfWeights::Located{&t, f.get()});
    if (!inserted) {
      return absl::DataLossError(StrCat("safetensors: tensor '", t.name, "' is in both ",
                                        it->second.file->path(), " and ", f->path()));
    }
  }
  w->files.push_back(std::move(f));
  return absl::OkStatus();
}

// model.safetensors.index.json: {"metadata": {...}, "weight_map": {tensor: shard file}}.
absl::Status OpenShards(const std::string& dir, const std::string& index_path, HfWeights* w) {
  CHORUS_ASSIGN_OR_RETURN(Json index, ReadJsonFile(index_path, 64ull << 20));
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return absl::InvalidArgumentError(StrCat(index_path, ": no 'weight_map' object"));
  }
  const Json& map = index["weight_map"];
  std::set<std::string> shards;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->is_string()) {
      return absl::InvalidArgumentError(
          StrCat(index_path, ": weight_map['", it.key(), "'] is not a file name"));
    }
    const std::string shard = it->get<std::string>();
    // Shards are plain file names inside the directory.
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      return absl::InvalidArgumentError(
          StrCat(index_path, ": shard name '", shard, "' is not a file in the directory"));
    }
    shards.insert(shard);
  }
  for (const std::string& shard : shards) {
    CHORUS_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(dir + "/" + shard));
    CHORUS_RETURN_IF_ERROR(AddFile(std::move(f), w));
  }
  for (auto it = map.begin(); it != map.end(); ++it) {
    auto found = w->by_name.find(it.key());
    const std::string shard = dir + "/" + it->get<std::string>();
    if (found == w->by_name.end() || found->second.file->path() != shard) {
      return absl::DataLossError(StrCat(index_path, ": tensor '", it.key(), "' is not in ", shard));
    }
  }
  for (const auto& [name, loc] : w->by_name) {
    if (!map.contains(name)) {
      return absl::DataLossError(StrCat(index_path, ": tensor '", name, "' of ", loc.file->path(),
                                        " is not in the weight_map"));
    }
  }
  return absl::OkStatus();
}

// The GGUF name of an HF tensor, or "" when unknown. `layer` gets the block number.
std::string GgufName(const std::string& hf, int* layer) {
  static const std::pair<const char*, const char*> kTop[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"},
  };
  for (const auto& [from, to] : kTop) {
    if (hf == from) return to;
  }
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  static const std::regex kBlock(R"(model\.layers\.(\d{1,4})\.(.+))");
  std::smatch m;
  if (!std::regex_match(hf, m, kBlock)) return "";
  for (const auto& [from, to] : kLayer) {
    if (m[2] == from) {
      *layer = std::stoi(m[1]);
      return StrCat("blk.", *layer, ".", to);
    }
  }
  return "";
}

GgmlType ToGgml(SafetensorsDtype d) {
  switch (d) {
    case SafetensorsDtype::kF16:
      return GgmlType::kF16;
    case SafetensorsDtype::kBF16:
      return GgmlType::kBF16;
    default:
      return GgmlType::kF32;
  }
}

uint8_t* NewBuffer(TensorStorage* s, uint64_t bytes) {
  s->buffers.push_back(std::make_unique<uint8_t[]>(bytes));
  s->owned_bytes += bytes;
  return s->buffers.back().get();
}

// GGUF llama rotates adjacent pairs (2i, 2i+1), HF rotates halves (i, i + d/2): within each
// head, GGUF row 2i is HF row i and GGUF row 2i + 1 is HF row i + d/2 (what GGUF converters do).
void PermuteRows(const uint8_t* src, uint8_t* dst, int64_t rows, int64_t row_bytes, int heads) {
  const int64_t hd = rows / heads;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t i = 0; i < hd / 2; ++i) {
      for (int half = 0; half < 2; ++half) {
        const int64_t from = h * hd + half * (hd / 2) + i, to = h * hd + 2 * i + half;
        std::memcpy(dst + to * row_bytes, src + from * row_bytes, row_bytes);
      }
    }
  }
}

absl::StatusOr<GgufTensorInfo> Convert(const HfConfig& c, const std::string& gguf_name,
                                       const HfWeights::Located& loc, TensorStorage* storage) {
  const SafetensorsTensor& t = *loc.tensor;
  auto bad = [&](std::string_view what) {
    return absl::FailedPreconditionError(
        StrCat(loc.file->path(), ": tensor '", t.name, "' ", what));
  };
  if (t.dtype != SafetensorsDtype::kF32 && t.dtype != SafetensorsDtype::kF16 &&
      t.dtype != SafetensorsDtype::kBF16) {
    return bad(StrCat("has dtype ", SafetensorsDtypeName(t.dtype), " (F32, F16, BF16 only)"));
  }
  if (t.shape.empty() || t.shape.size() > 2 || t.num_elements == 0) {
    return bad("is not a non-empty 1-D or 2-D tensor");
  }
  GgufTensorInfo g;
  g.name = gguf_name;
  g.type = ToGgml(t.dtype);
  g.n_dims = static_cast<int>(t.shape.size());
  g.ne[0] = t.shape.back();
  g.ne[1] = t.shape.size() == 2 ? t.shape[0] : 1;
  g.data = t.data;
  const int esize = SafetensorsDtypeSize(t.dtype);
  if (g.n_dims == 1) {  // norms and biases: F32, as the loader expects
    std::vector<uint8_t> raw(t.data, t.data + (t.end - t.begin));  // aligned for the reads
    float* out = reinterpret_cast<float*>(NewBuffer(storage, t.num_elements * 4));
    DequantizeRow(g.type, raw.data(), out, t.num_elements);
    g.type = GgmlType::kF32;
    g.data = reinterpret_cast<const uint8_t*>(out);
    return g;
  }
  const bool permute = c.permute_qk && (gguf_name.ends_with(".attn_q.weight") ||
                                        gguf_name.ends_with(".attn_k.weight"));
  if (permute) {
    const int heads = gguf_name.ends_with(".attn_q.weight") ? c.n_heads : c.n_kv_heads;
    if (g.ne[1] % (2 * heads) != 0) return bad(StrCat("rows do not split into ", heads, " heads"));
    uint8_t* out = NewBuffer(storage, t.end - t.begin);
    PermuteRows(t.data, out, g.ne[1], g.ne[0] * esize, heads);
    g.data = out;
  } else if (reinterpret_cast<uintptr_t>(t.data) % esize != 0) {
    uint8_t* out = NewBuffer(storage, t.end - t.begin);  // element-aligned copy
    std::memcpy(out, t.data, t.end - t.begin);
    g.data = out;
  }
  return g;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HfWeights>> OpenWeights(const std::string& dir) {
  auto w = std::make_unique<HfWeights>();
  const std::string index = dir + "/model.safetensors.index.json";
  const std::string single = dir + "/model.safetensors";
  if (access(index.c_str(), F_OK) == 0) {
    CHORUS_RETURN_IF_ERROR(OpenShards(dir, index, w.get()));
  } else if (access(single.c_str(), F_OK) == 0) {
    CHORUS_ASSIGN_OR_RETURN(auto f, SafetensorsFile::Open(single));
    CHORUS_RETURN_IF_ERROR(AddFile(std::move(f), w.get()));
  } else {
    return absl::NotFoundError(
        StrCat(dir, ": neither model.safetensors nor model.safetensors.index.json"));
  }
  return w;
}

absl::StatusOr<std::vector<GgufTensorInfo>> MapTensors(const HfConfig& c, TensorStorage* storage) {
  std::vector<GgufTensorInfo> out;
  for (const auto& [name, loc] : storage->weights->by_name) {
    int layer = -1;
    const std::string gguf = GgufName(name, &layer);
    if (name.ends_with(".rotary_emb.inv_freq")) continue;        // derived from rope_theta
    if (gguf == "output.weight" && c.tied_embeddings) continue;  // HF ties it to the embedding
    if (gguf.empty() || layer >= c.n_layers) {
      return absl::FailedPreconditionError(
          StrCat(loc.file->path(), ": tensor '", name, "' is not used by Chorus's ", c.arch,
                 " model; refusing to load a checkpoint whose math it would not fully implement"));
    }
    CHORUS_ASSIGN_OR_RETURN(GgufTensorInfo g, Convert(c, gguf, loc, storage));
    out.push_back(std::move(g));
  }
  if (!c.tied_embeddings && storage->weights->by_name.count("lm_head.weight") == 0) {
    return absl::FailedPreconditionError(
        "safetensors: lm_head.weight is missing and config.json's tie_word_embeddings is false");
  }
  if (!c.rope_freqs.empty()) {
    const uint64_t bytes = c.rope_freqs.size() * 4;
    uint8_t* buf = NewBuffer(storage, bytes);
    std::memcpy(buf, c.rope_freqs.data(), bytes);
    GgufTensorInfo g;
    g.name = "rope_freqs.weight";
    g.type = GgmlType::kF32;
    g.n_dims = 1;
    g.ne[0] = static_cast<int64_t>(c.rope_freqs.size());
    g.data = buf;
    out.push_back(std::move(g));
  }
  return out;
}

}  // namespace chorus::hf

// The CUDA backend's host inputs: the forward's integer inputs and attention plan, uploaded in one
// copy by BeginForward; fresh uploads for arrays it did not see; sampling on the device.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "chorus/backends/device_plan.h"
#include "chorus/core/str_cat.h"
#include "cuda_backend_internal.h"
#include "kernels.h"

namespace chorus::cuda_internal {
namespace {

// Decode batches up to this many rows may be captured as graphs.
constexpr int kGraphMaxTokens = 64;
// Runs of at least this many query rows go to the tiled prefill attention.
constexpr int kMinQueryTile = 4;

}  // namespace

void CudaBackend::PlanAttention(const AttentionLayout& l, bool graph) {
  const int n = l.num_tokens;
  plan_ = PlanQueryTiles(l.positions, l.seq_of_token, n, k::kQueryTile, kMinQueryTile);
  int max_pos = 0, max_single_pos = 0;
  for (int t = 0; t < n; ++t) max_pos = std::max(max_pos, l.positions[t]);
  for (int32_t t : plan_.singles) max_single_pos = std::max(max_single_pos, l.positions[t]);
  auto splits = [&](int pos) {
    const int s = pos / k::kAttentionChunk + 1;
    return graph ? static_cast<int>(RoundUpPow2(s)) : s;
  };
  splits_all_ = splits(max_pos);
  splits_singles_ = splits(max_single_pos);
}

// Layout of host_: tokens, positions, sequence ids (n each), block tables (num_seqs rows of
// `stride`), logit rows, query tiles (first, count), single rows.
CudaBackend::InputOffsets CudaBackend::PackInputs(const int32_t* tokens, const AttentionLayout& l,
                                                  int stride, const int32_t* logit_rows,
                                                  int num_logit_rows) {
  const int n = l.num_tokens;
  int num_seqs = 0;
  for (int t = 0; t < n; ++t) num_seqs = std::max(num_seqs, l.seq_of_token[t] + 1);
  const size_t un = static_cast<size_t>(n);
  const size_t tables = static_cast<size_t>(num_seqs) * stride;
  const size_t ntiles = plan_.tiles.size(), nsingles = plan_.singles.size();
  InputOffsets o;
  o.rows = 3 * un + tables;
  o.tiles = o.rows + static_cast<size_t>(num_logit_rows);
  o.singles = o.tiles + 2 * ntiles;
  o.total = o.singles + nsingles;
  host_.assign(o.total, 0);
  int32_t* h = host_.data();
  std::memcpy(h, tokens, un * 4);
  std::memcpy(h + un, l.positions, un * 4);
  std::memcpy(h + 2 * un, l.seq_of_token, un * 4);
  for (int s = 0; s < num_seqs; ++s) {
    std::memcpy(h + 3 * un + static_cast<size_t>(s) * stride,
                l.block_tables + static_cast<size_t>(s) * l.max_blocks_per_seq,
                l.max_blocks_per_seq * 4);
  }
  int32_t* rows = h + o.rows;
  if (num_logit_rows > 0) std::memcpy(rows, logit_rows, num_logit_rows * 4);
  int32_t* tiles = h + o.tiles;
  for (size_t i = 0; i < ntiles; ++i) {
    tiles[2 * i] = plan_.tiles[i].first;
    tiles[2 * i + 1] = plan_.tiles[i].count;
  }
  if (nsingles > 0) std::memcpy(h + o.singles, plan_.singles.data(), nsingles * 4);
  return o;
}

// Uploads the forward's integer inputs in one copy: tokens, positions, sequence ids, block
// tables (row stride rounded up to a power of two for graph batches, so that a growing
// sequence keeps its graph), logit rows, the attention plan (query tiles, single rows).
void CudaBackend::BeginForward(const int32_t* tokens, const AttentionLayout& l,
                               const int32_t* logit_rows, int num_logit_rows) {
  Flush();
  const int n = l.num_tokens;
  const bool graph = options_.graphs && n <= kGraphMaxTokens;
  const int stride =
      graph ? static_cast<int>(RoundUpPow2(l.max_blocks_per_seq)) : l.max_blocks_per_seq;
  PlanAttention(l, graph);
  const InputOffsets o = PackInputs(tokens, l, stride, logit_rows, num_logit_rows);

  // Nothing is cached until the upload succeeds: after a failure the ops upload their own
  // inputs or report the missing layout, and never read a freed buffer.
  host_tokens_ = host_positions_ = host_rows_ = nullptr;
  dev_tokens_ = dev_rows_ = dev_tiles_ = dev_singles_ = nullptr;
  layout_ = {};
  if (!Grow(ints_, o.total * 4)) return;
  Check(cudaMemcpyAsync(ints_.p, host_.data(), o.total * 4, cudaMemcpyHostToDevice, stream_));
  Check(cudaStreamSynchronize(stream_));
  auto* d = static_cast<int32_t*>(ints_.p);
  const size_t un = static_cast<size_t>(n);
  host_tokens_ = tokens;
  host_positions_ = l.positions;
  host_rows_ = logit_rows;
  dev_tokens_ = d;
  layout_ = {n, d + un, d + 2 * un, d + 3 * un, stride, l.block_size};
  dev_rows_ = d + o.rows;
  dev_tiles_ = d + o.tiles;
  dev_singles_ = d + o.singles;
  tape_.set_capturable(graph);
}

const int32_t* CudaBackend::Device(const int32_t* host, const int32_t* cached_host,
                                   const int32_t* cached_dev, int n) {
  if (host == cached_host && cached_dev != nullptr) return cached_dev;
  Flush();
  if (!Grow(extra_, static_cast<size_t>(n) * 4)) return nullptr;
  Check(
      cudaMemcpyAsync(extra_.p, host, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice, stream_));
  Check(cudaStreamSynchronize(stream_));
  return static_cast<const int32_t*>(extra_.p);
}

bool CudaBackend::LayoutReady(const AttentionLayout& l) {
  if (l.positions == host_positions_ && l.num_tokens == layout_.num_tokens) return true;
  if (error_.ok()) {
    error_ = absl::InternalError("cuda: attention layout was not prepared by BeginForward");
  }
  return false;
}

absl::Status CudaBackend::SampleRows(const float* logits, int num_rows, int vocab,
                                     const std::vector<RowSampling>& rows,
                                     std::vector<SampledToken>* out) {
  Flush();
  const int draws = static_cast<int>(rows.size());
  std::vector<k::SamplingRow> host(draws);
  for (int i = 0; i < draws; ++i) {
    const RowSampling& r = rows[i];
    if (r.row < 0 || r.row >= num_rows) {
      return absl::InvalidArgumentError(
          StrCat("sample rows: row ", r.row, " is outside [0, ", num_rows, ")"));
    }
    host[i] = {r.temperature, r.top_k, r.top_p, r.min_p, r.uniform, r.row};
  }
  out->resize(draws);
  if (draws == 0) return TakeError();
  const size_t pbytes = draws * sizeof(k::SamplingRow), obytes = draws * 8;
  if (!Grow(sample_, pbytes + obytes)) return TakeError();
  auto* dparams = static_cast<k::SamplingRow*>(sample_.p);
  auto* dtokens = reinterpret_cast<int32_t*>(static_cast<char*>(sample_.p) + pbytes);
  auto* dlogp = reinterpret_cast<float*>(dtokens + draws);
  Check(cudaMemcpyAsync(dparams, host.data(), pbytes, cudaMemcpyHostToDevice, stream_));
  Check(k::SampleRows(logits, vocab, dparams, draws, dtokens, dlogp, stream_));
  sampled_.resize(2 * static_cast<size_t>(draws));
  Check(cudaMemcpyAsync(sampled_.data(), dtokens, obytes, cudaMemcpyDeviceToHost, stream_));
  Check(cudaStreamSynchronize(stream_));
  for (int i = 0; i < draws; ++i) {
    (*out)[i].token = sampled_[i];
    std::memcpy(&(*out)[i].logprob, &sampled_[draws + i], 4);
  }
  return TakeError();
}

}  // namespace chorus::cuda_internal

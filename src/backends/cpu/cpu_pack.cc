// The packed int8 layout's writer (the layout: cpu_int8_packed.h). Plain scalar code: it runs
// once per matrix, on the matrix's first matmul.
#include <cstring>

#include "src/backends/cpu/cpu_int8_packed.h"
#include "src/backends/cpu/cpu_simd.h"

namespace chorus::cpu {
namespace {

constexpr int kR = kPackRows;
constexpr int64_t kQ8Record = 32 + 8 * 64;
constexpr int64_t kQ4Record = 32 + 4 * 64;
constexpr int64_t kQ4KSub = 32 + 4 * 64;
constexpr int64_t kQ4KSuper = 64 + 8 * kQ4KSub;
constexpr int64_t kQ6KSub = 32 + 4 * 64 + 2 * 64;
constexpr int64_t kQ6KSuper = 32 + 8 * kQ6KSub;

// 16 rows' nibbles in Q4_0's order (nib[r][j]: value j low, value j + 16 high) as the 4 pairs.
void PackNibbles(const uint8_t* const nib[kR], uint8_t* pairs) {
  for (int p = 0; p < 4; ++p) {
    for (int r = 0; r < kR; ++r) std::memcpy(pairs + 64 * p + 4 * r, nib[r] + 4 * p, 4);
  }
}

// blk[r] = block b (of block_bytes) of row 16g + r.
void GroupBlocks(const WeightTensor& w, int64_t g, int64_t b, int64_t block_bytes,
                 const uint8_t* blk[kR]) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int r = 0; r < kR; ++r) blk[r] = base + (kR * g + r) * w.row_bytes + b * block_bytes;
}

// As GroupBlocks, typed: blk[r] = K-quant super-block sb of row 16g + r.
template <typename Block>
void GroupSuperBlocks(const WeightTensor& w, int64_t g, int64_t sb, const Block* blk[kR]) {
  const uint8_t* raw[kR];
  GroupBlocks(w, g, sb, sizeof(Block), raw);
  for (int r = 0; r < kR; ++r) blk[r] = reinterpret_cast<const Block*>(raw[r]);
}

// One Q8_0 / Q4_0 record: block b of group g.
void PackRecordQ(const WeightTensor& w, int64_t g, int64_t b, uint8_t* rec) {
  const bool q8 = w.type == GgmlType::kQ8_0;
  const uint8_t* blk[kR];
  GroupBlocks(w, g, b, q8 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0), blk);
  for (int r = 0; r < kR; ++r) std::memcpy(rec + 2 * r, blk[r], 2);  // the f16 scale
  if (!q8) {
    const uint8_t* nib[kR];
    for (int r = 0; r < kR; ++r) nib[r] = blk[r] + 2;
    PackNibbles(nib, rec + 32);
    return;
  }
  for (int c = 0; c < 8; ++c) {
    for (int r = 0; r < kR; ++r) {
      for (int i = 0; i < 4; ++i)
        rec[32 + 64 * c + 4 * r + i] = static_cast<uint8_t>(blk[r][2 + 4 * c + i] ^ 0x80);
    }
  }
}

// One Q4_K super-record: super-block sb of group g.
void PackSuperRecordQ4K(const WeightTensor& w, int64_t g, int64_t sb, uint8_t* rec) {
  const BlockQ4_K* blk[kR];
  GroupSuperBlocks(w, g, sb, blk);
  for (int r = 0; r < kR; ++r) {
    std::memcpy(rec + 2 * r, &blk[r]->d, 2);
    std::memcpy(rec + 32 + 2 * r, &blk[r]->dmin, 2);
  }
  for (int j = 0; j < 8; ++j) {
    uint8_t* sub = rec + 64 + j * kQ4KSub;
    uint8_t nib[kR][16];
    const uint8_t* nibs[kR];
    for (int r = 0; r < kR; ++r) {
      int sc, mn;
      ScaleMinK4(j, blk[r]->scales, &sc, &mn);
      sub[r] = static_cast<uint8_t>(sc);
      sub[16 + r] = static_cast<uint8_t>(mn);
      // Sub-block j is nibble half j % 2 of qs[32 * (j / 2) ..]: as Q4_0 nibbles (i, i + 16).
      const uint8_t* src = blk[r]->qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int i = 0; i < 16; ++i) {
        nib[r][i] =
            static_cast<uint8_t>(((src[i] >> shift) & 0xf) | (((src[i + 16] >> shift) & 0xf) << 4));
      }
      nibs[r] = nib[r];
    }
    PackNibbles(nibs, sub + 32);
  }
}

// Sub-block j (values 32j..32j+31, 0..63) of a Q6_K super-block.
void Q6KValues(const BlockQ6_K& b, int j, uint8_t q[32]) {
  const int half = j / 4, g4 = j % 4;
  const uint8_t* ql = b.ql + 64 * half + 32 * (g4 & 1);
  const uint8_t* qh = b.qh + 32 * half;
  for (int l = 0; l < 32; ++l) {
    q[l] =
        static_cast<uint8_t>(((ql[l] >> (4 * (g4 >> 1))) & 0xf) | (((qh[l] >> (2 * g4)) & 3) << 4));
  }
}

// One Q6_K super-record: super-block sb of group g.
void PackSuperRecordQ6K(const WeightTensor& w, int64_t g, int64_t sb, uint8_t* rec) {
  const BlockQ6_K* blk[kR];
  GroupSuperBlocks(w, g, sb, blk);
  for (int r = 0; r < kR; ++r) {
    std::memcpy(rec + 2 * r, &blk[r]->d, 2);
  }
  for (int j = 0; j < 8; ++j) {
    uint8_t* sub = rec + 32 + j * kQ6KSub;
    const int half = j / 4, g4 = j % 4;
    uint8_t q[kR][32], nib[kR][16];
    const uint8_t* nibs[kR];
    for (int r = 0; r < kR; ++r) {
      sub[r] = static_cast<uint8_t>(blk[r]->scales[8 * half + 2 * g4]);
      sub[16 + r] = static_cast<uint8_t>(blk[r]->scales[8 * half + 2 * g4 + 1]);
      Q6KValues(*blk[r], j, q[r]);
      for (int i = 0; i < 16; ++i)
        nib[r][i] = static_cast<uint8_t>((q[r][i] & 0xf) | ((q[r][i + 16] & 0xf) << 4));
      nibs[r] = nib[r];
      for (int h = 0; h < 2; ++h) {  // high bit pairs of chunks 4h..4h+3
        for (int i = 0; i < 4; ++i) {
          uint8_t bits = 0;
          for (int k = 0; k < 4; ++k)
            bits |= static_cast<uint8_t>((q[r][4 * (4 * h + k) + i] >> 4) << (2 * k));
          sub[32 + 256 + 64 * h + 4 * r + i] = bits;
        }
      }
    }
    PackNibbles(nibs, sub + 32);
  }
}

}  // namespace

int64_t PackedGroupBytes(GgmlType type, int64_t cols) {
  switch (type) {
    case GgmlType::kQ8_0:
      return cols / kQK * kQ8Record;
    case GgmlType::kQ4_0:
      return cols / kQK * kQ4Record;
    case GgmlType::kQ4_K:
      return cols / kQK_K * kQ4KSuper;
    case GgmlType::kQ6_K:
      return cols / kQK_K * kQ6KSuper;
    default:
      return 0;
  }
}

bool Int8PackSupported(const WeightTensor& w) {
#if CHORUS_INT8_PACKED
  const bool k = w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ6_K;
  const bool q = w.type == GgmlType::kQ8_0 || w.type == GgmlType::kQ4_0;
  return (k || q) && w.rows > 0 && w.rows % kR == 0 && w.cols % (k ? kQK_K : kQK) == 0;
#else
  (void)w;
  return false;
#endif
}

size_t Int8PackedBytes(const WeightTensor& w) {
  return static_cast<size_t>(w.rows / kR) * static_cast<size_t>(PackedGroupBytes(w.type, w.cols));
}

void PackInt8Rows(const WeightTensor& w, int64_t group_begin, int64_t group_end, uint8_t* out) {
  const bool k = w.type == GgmlType::kQ4_K || w.type == GgmlType::kQ6_K;
  const int64_t n = w.cols / (k ? kQK_K : kQK);  // records per group
  const int64_t rec_bytes = PackedGroupBytes(w.type, w.cols) / n;
  for (int64_t g = group_begin; g < group_end; ++g) {
    for (int64_t b = 0; b < n; ++b) {
      uint8_t* rec = out + (g * n + b) * rec_bytes;
      if (w.type == GgmlType::kQ4_K) {
        PackSuperRecordQ4K(w, g, b, rec);
      } else if (w.type == GgmlType::kQ6_K) {
        PackSuperRecordQ6K(w, g, b, rec);
      } else {
        PackRecordQ(w, g, b, rec);
      }
    }
  }
}

}  // namespace chorus::cpu

// Byte-level BPE ("gpt2" tokenizer model): pre-tokenize, map each byte of a word to its
// printable code point (GPT-2's bytes_to_unicode), then apply merges by rank (lowest first,
// leftmost on ties) and look the resulting symbols up in the vocabulary.
#include <climits>
#include <functional>
#include <queue>

#include "chorus/core/utf8.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {
namespace {

struct ByteTables {
  std::string byte_to_text[256];
  int cp_to_byte[512];
  ByteTables() {
    for (int& v : cp_to_byte) v = -1;
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
      const int cp = printable ? b : 256 + extra++;
      AppendUtf8(cp, &byte_to_text[b]);
      cp_to_byte[cp] = b;
    }
  }
};

const ByteTables& Tables() {
  static const ByteTables* t = new ByteTables();
  return *t;
}

}  // namespace

const std::string& ByteToUnicode(uint8_t b) { return Tables().byte_to_text[b]; }
int UnicodeToByte(uint32_t cp) { return cp < 512 ? Tables().cp_to_byte[cp] : -1; }

void Tokenizer::EncodeBpe(std::string_view text, std::vector<int32_t>* out) const {
  for (std::string_view word : PreTokenize(pre_, text)) EncodeBpeWord(word, out);
}

void Tokenizer::EncodeBpeWord(std::string_view word, std::vector<int32_t>* out) const {
  std::vector<std::string> sym;
  std::string mapped;
  for (unsigned char c : word) {
    sym.push_back(ByteToUnicode(c));
    mapped += sym.back();
  }
  if (ignore_merges_) {
    auto it = token_to_id_.find(mapped);
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  // Merge the lowest-ranked adjacent pair first (leftmost on ties) with a heap over a linked
  // list of symbols: O(n log n), so a megabyte-long "word" cannot stall the caller.
  struct Sym {
    int prev, next;
    size_t begin, len;  // byte span in `mapped`
  };
  struct Pair {
    int rank, left, right;
    size_t len;
    bool operator>(const Pair& o) const {
      return rank > o.rank || (rank == o.rank && left > o.left);
    }
  };
  std::vector<Sym> syms;
  for (size_t i = 0, b = 0; i < sym.size(); b += sym[i].size(), ++i) {
    syms.push_back({static_cast<int>(i) - 1, static_cast<int>(i) + 1, b, sym[i].size()});
  }
  syms.back().next = -1;
  std::priority_queue<Pair, std::vector<Pair>, std::greater<Pair>> heap;
  std::string key;
  auto push = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    key.assign(mapped, syms[l].begin, syms[l].len)
        .append(" ")
        .append(mapped, syms[r].begin, syms[r].len);
    auto it = merge_rank_.find(key);
    if (it != merge_rank_.end()) heap.push({it->second, l, r, syms[l].len + syms[r].len});
  };
  for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i) push(i, i + 1);
  while (!heap.empty()) {
    const Pair p = heap.top();
    heap.pop();
    Sym& l = syms[p.left];
    if (l.len == 0 || l.next != p.right || l.len + syms[p.right].len != p.len) continue;  // stale
    Sym& r = syms[p.right];
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = p.left;
    push(l.prev, p.left);
    push(p.left, l.next);
  }
  sym.clear();
  for (int i = 0; i >= 0; i = syms[i].next)
    sym.push_back(mapped.substr(syms[i].begin, syms[i].len));
  for (const std::string& s : sym) {
    auto it = token_to_id_.find(s);
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
      continue;
    }
    // A symbol without a token (vocabulary lacks a merge result): fall back to its bytes.
    for (size_t i = 0; i < s.size();) {
      int len;
      const uint32_t cp = DecodeUtf8(s, i, &len);
      const int b = UnicodeToByte(cp);
      if (b >= 0 && byte_ids_[b] >= 0) out->push_back(byte_ids_[b]);
      i += len;
    }
  }
}

}  // namespace chorus

// SentencePiece-style BPE ("llama" tokenizer model): start from UTF-8 characters and repeatedly
// merge the adjacent pair whose concatenation is the vocabulary piece with the highest score
// (leftmost on ties); characters left without a piece become <0xXX> byte tokens.
#include <queue>

#include "chorus/core/utf8.h"
#include "chorus/tokenizer/tokenizer.h"

namespace chorus {
namespace {

struct Symbol {
  int prev, next;
  size_t begin, len;  // bytes in the normalized text
};

struct Bigram {
  float score;
  int left;
  size_t len;  // combined length when queued (stale entries are skipped)
  bool operator<(const Bigram& o) const {
    return score < o.score || (score == o.score && left > o.left);
  }
};

}  // namespace

void Tokenizer::EncodeSpm(std::string_view raw, bool add_prefix, std::vector<int32_t>* out) const {
  std::string text;
  text.reserve(raw.size() + 3);
  if (add_prefix) text += "\xe2\x96\x81";
  for (char c : raw) {
    if (c == ' ') {
      text += "\xe2\x96\x81";
    } else {
      text.push_back(c);
    }
  }
  std::vector<Symbol> sym;
  for (size_t i = 0; i < text.size();) {
    int len;
    DecodeUtf8(text, i, &len);
    sym.push_back({static_cast<int>(sym.size()) - 1, static_cast<int>(sym.size()) + 1, i,
                   static_cast<size_t>(len)});
    i += len;
  }
  if (sym.empty()) return;
  sym.back().next = -1;

  std::priority_queue<Bigram> queue;
  auto try_add = [&](int left, int right) {
    if (left < 0 || right < 0) return;
    const size_t len = sym[left].len + sym[right].len;
    auto it = token_to_id_.find(text.substr(sym[left].begin, len));
    if (it == token_to_id_.end()) return;
    queue.push({scores_[it->second], left, len});
  };
  for (int i = 0; i + 1 < static_cast<int>(sym.size()); ++i) try_add(i, i + 1);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    Symbol& left = sym[b.left];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = sym[left.next];
    if (left.len + right.len != b.len) continue;  // stale
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = b.left;
    try_add(left.prev, b.left);
    try_add(b.left, left.next);
  }
  for (int i = 0; i >= 0; i = sym[i].next) {
    const std::string piece = text.substr(sym[i].begin, sym[i].len);
    auto it = token_to_id_.find(piece);
    if (it != token_to_id_.end()) {
      out->push_back(it->second);
      continue;
    }
    for (unsigned char c : piece) {
      if (byte_ids_[c] >= 0) {
        out->push_back(byte_ids_[c]);
      } else if (unk_id_ >= 0) {
        out->push_back(unk_id_);
      }
    }
  }
}

}  // namespace chorus

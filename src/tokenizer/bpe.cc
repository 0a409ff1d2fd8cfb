// Byte-level BPE ("gpt2" tokenizer model): pre-tokenize, map each byte of a word to its
// printable code point (GPT-2's bytes_to_unicode), then apply merges by rank (lowest first,
// leftmost on ties) and look the resulting symbols up in the vocabulary.
#include <climits>

#include "chorus/tokenizer/tokenizer.h"
#include "chorus/tokenizer/utf8.h"

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
  // Repeatedly merge the lowest-ranked adjacent pair; words are short, so a scan suffices.
  std::string key;
  while (sym.size() > 1) {
    int best_rank = INT_MAX;
    size_t best = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      key.assign(sym[i]).append(" ").append(sym[i + 1]);
      auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best = i;
      }
    }
    if (best_rank == INT_MAX) break;
    sym[best] += sym[best + 1];
    sym.erase(sym.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
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

// Byte-level BPE training: Tokenizer::train.
//
// Chunks from the GPT-2 pre-tokeniser are counted once; then each step merges
// the most frequent adjacent pair (ties: the smaller pair of ids), updating
// pair counts incrementally in only the words that contain the pair. Words
// are sorted first, so the result never depends on hash-map order.
#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace rlhf {
namespace {

using PairKey = uint64_t;
PairKey key_of(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}
int32_t first_of(PairKey k) { return static_cast<int32_t>(k >> 32); }
int32_t second_of(PairKey k) { return static_cast<int32_t>(k & 0xffffffffu); }

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

struct Entry {
  int64_t count;
  PairKey pair;
  bool operator<(const Entry& o) const {  // max-heap: higher count, then smaller pair
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

}  // namespace

Tokenizer Tokenizer::train(const std::vector<std::string>& documents,
                           const TokenizerTrainOptions& options) {
  const int num_special = static_cast<int>(options.special_tokens.size());
  const int target_tokens = options.vocab_size - num_special;
  if (target_tokens < 256) {
    fail(ErrorKind::kConfig, "tokenizer vocab_size ", options.vocab_size,
         " is too small: it must hold 256 bytes and ", num_special,
         " special tokens. Use at least ", 256 + num_special, ".");
  }

  // 1. Count chunks.
  std::unordered_map<std::string, int64_t> chunk_counts;
  PreTokenizer pre;
  for (const std::string& doc : documents) {
    pre.split(doc, [&](std::string_view chunk) { ++chunk_counts[std::string(chunk)]; });
  }
  std::vector<std::pair<std::string, int64_t>> sorted(chunk_counts.begin(), chunk_counts.end());
  chunk_counts.clear();
  std::sort(sorted.begin(), sorted.end());

  Tokenizer tok;
  // Byte tokens in GPT-2's order (ids 0..255).
  std::vector<int32_t> byte_id(256);
  {
    std::vector<int> order;
    for (int b = '!'; b <= '~'; ++b) order.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) order.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) order.push_back(b);
    for (int b = 0; b < 256; ++b) {
      if (std::find(order.begin(), order.end(), b) == order.end()) order.push_back(b);
    }
    for (int i = 0; i < 256; ++i) {
      byte_id[order[i]] = i;
      tok.add_token(std::string(1, static_cast<char>(order[i])));
    }
  }

  std::vector<Word> words;
  words.reserve(sorted.size());
  for (auto& [chunk, count] : sorted) {
    Word w;
    w.count = count;
    for (unsigned char c : chunk) {
      // With split_digits a digit ends the word it is in and is a word of
      // its own (one symbol: no pair, so never merged).
      if (options.split_digits && c >= '0' && c <= '9') {
        if (!w.symbols.empty()) words.push_back({std::move(w.symbols), count});
        w.symbols.clear();
        continue;
      }
      w.symbols.push_back(byte_id[c]);
    }
    if (!w.symbols.empty()) words.push_back(std::move(w));
  }
  sorted.clear();

  // 2. Pair counts and where each pair occurs.
  std::unordered_map<PairKey, int64_t> pair_count;
  std::unordered_map<PairKey, std::vector<int32_t>> where;
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const auto& s = words[wi].symbols;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      const PairKey k = key_of(s[i], s[i + 1]);
      pair_count[k] += words[wi].count;
      auto& list = where[k];
      if (list.empty() || list.back() != static_cast<int32_t>(wi)) list.push_back(static_cast<int32_t>(wi));
    }
  }
  std::priority_queue<Entry> heap;
  {
    std::vector<Entry> entries;
    entries.reserve(pair_count.size());
    for (const auto& [k, c] : pair_count) entries.push_back({c, k});
    std::sort(entries.begin(), entries.end());  // determinism of heap layout
    for (const auto& e : entries) heap.push(e);
  }

  // 3. Merge.
  std::vector<int32_t> touched_stamp(words.size(), -1);
  int merges_done = 0;
  while (static_cast<int>(tok.tokens_.size()) < target_tokens && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.pair);
    const int64_t current = pc == pair_count.end() ? 0 : pc->second;
    if (current != top.count) {
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < options.min_frequency) break;

    const int32_t a = first_of(top.pair), b = second_of(top.pair);
    // Two merges can spell the same bytes ("a"+"bc", "ab"+"c"); like HF
    // tokenizers, the second reuses the first one's id.
    std::string merged = tok.tokens_[a] + tok.tokens_[b];
    auto existing = tok.token_ids_.find(merged);
    const int32_t new_id = existing != tok.token_ids_.end() ? existing->second
                                                            : static_cast<int32_t>(tok.tokens_.size());
    if (existing == tok.token_ids_.end()) tok.add_token(std::move(merged));
    tok.add_merge(a, b, new_id);
    ++merges_done;

    std::unordered_map<PairKey, int64_t> delta;
    std::vector<int32_t> occurrences = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t wi : occurrences) {
      if (touched_stamp[wi] == merges_done) continue;
      touched_stamp[wi] = merges_done;
      Word& w = words[wi];
      auto& s = w.symbols;
      bool changed = false;
      std::vector<int32_t> out;
      out.reserve(s.size());
      for (size_t i = 0; i < s.size();) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          changed = true;
          i += 2;
          out.push_back(new_id);
        } else {
          out.push_back(s[i]);
          ++i;
        }
      }
      if (!changed) continue;
      // Replace this word's pair contributions: old out, new in.
      for (size_t i = 0; i + 1 < s.size(); ++i) delta[key_of(s[i], s[i + 1])] -= w.count;
      for (size_t i = 0; i + 1 < out.size(); ++i) {
        const PairKey k = key_of(out[i], out[i + 1]);
        delta[k] += w.count;
        if (out[i] == new_id || out[i + 1] == new_id) {
          auto& list = where[k];
          if (list.empty() || list.back() != wi) list.push_back(wi);
        }
      }
      s = std::move(out);
    }
    std::vector<std::pair<PairKey, int64_t>> changes(delta.begin(), delta.end());
    std::sort(changes.begin(), changes.end());
    for (const auto& [k, d] : changes) {
      if (d == 0) continue;
      int64_t& c = pair_count[k];
      c += d;
      if (d > 0) heap.push({c, k});
      if (c <= 0) pair_count.erase(k);
    }
  }

  for (const auto& name : options.special_tokens) {
    if (std::find(tok.special_names_.begin(), tok.special_names_.end(), name) != tok.special_names_.end()) {
      continue;
    }
    tok.special_ids_.push_back(static_cast<int32_t>(tok.tokens_.size()));
    tok.special_names_.push_back(name);
    tok.tokens_.push_back(name);
  }
  tok.finish_loading("the trained tokenizer");
  return tok;
}

}  // namespace rlhf

#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <memory>
#include <queue>
#include <set>

#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "tokenizer/normalize.h"
#include "tokenizer/pretokenizer.h"

namespace rlhf {

// tokenizer.json and vocab.json hold objects of 100k+ keys: parsed and built
// map-backed (common/config.h's parse_json_unordered), never ordered_json.
using JsonMap = nlohmann::json;
namespace special {
const std::vector<std::string>& defaults() {
  static const std::vector<std::string> kDefaults = {kEndOfText, kSystem, kUser, kAssistant,
                                                     kEndOfTurn};
  return kDefaults;
}
const char* const kChatTemplate =
    "{{ '<|endoftext|>' }}{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";
const char* const kLegacyChatTemplate =
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}";
}  // namespace special

namespace {

// The byte of a SentencePiece byte-fallback piece ("<0x0A>" is 10), or -1
// for any other piece ("<0xZZ>" included: found by fuzz/fuzz_tokenizer_json).
int byte_token_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    const int d = c >= '0' && c <= '9'   ? c - '0'
                  : c >= 'A' && c <= 'F' ? c - 'A' + 10
                  : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                         : -1;
    if (d < 0) return -1;
    value = value * 16 + d;
  }
  return value;
}

// GPT-2's byte order: printable bytes keep their code point, the others are
// shifted to 256+. Token ids 0..255 follow this order, as in GPT-2.
struct ByteTables {
  std::array<uint8_t, 256> order{};       // id -> byte
  std::array<std::string, 256> unicode{};  // byte -> UTF-8 of its character
  std::unordered_map<uint32_t, uint8_t> inverse;  // code point -> byte

  ByteTables() {
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
        bs.push_back(b);
        cs.push_back(256 + n++);
      }
    }
    for (int i = 0; i < 256; ++i) {
      order[i] = static_cast<uint8_t>(bs[i]);
      unicode[bs[i]] = utf8(static_cast<uint32_t>(cs[i]));
      inverse[static_cast<uint32_t>(cs[i])] = static_cast<uint8_t>(bs[i]);
    }
  }
  static std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
    return s;
  }
};

const ByteTables& tables() {
  static const ByteTables kTables;
  return kTables;
}

std::string to_unicode(const std::string& bytes) {
  std::string out;
  for (unsigned char c : bytes) out += byte_to_unicode(c);
  return out;
}

std::string bytes_or_fail(std::string_view text, const std::string& source) {
  std::string out;
  if (!unicode_to_bytes(text, out)) {
    fail(ErrorKind::kData, source, ": the token '", std::string(text),
         "' is not in GPT-2's byte-level alphabet; is this a byte-level BPE vocabulary?");
  }
  return out;
}

constexpr size_t kMaxCachedChunk = 64;
constexpr size_t kMaxCacheEntries = 1 << 20;

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return tables().unicode[byte]; }

bool unicode_to_bytes(std::string_view text, std::string& out) {
  out.clear();
  const auto& inv = tables().inverse;
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    uint32_t cp;
    int len;
    if (c < 0x80) { cp = c; len = 1; }
    else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; len = 2; }
    else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; len = 3; }
    else return false;
    if (i + len > text.size()) return false;
    for (int k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    auto it = inv.find(cp);
    if (it == inv.end()) return false;
    out += static_cast<char>(it->second);
    i += len;
  }
  return true;
}

Tokenizer::Tokenizer(const Tokenizer& other)
    : tokens_(other.tokens_),
      token_ids_(other.token_ids_),
      merges_(other.merges_),
      merge_of_(other.merge_of_),
      byte_ids_(other.byte_ids_),
      special_names_(other.special_names_),
      special_ids_(other.special_ids_),
      plain_added_(other.plain_added_),
      split_pattern_(other.split_pattern_),
      ignore_merges_(other.ignore_merges_),
      config_(other.config_),
      nfc_(other.nfc_),
      sentencepiece_(other.sentencepiece_),
      prepend_space_(other.prepend_space_),
      pieces_(other.pieces_),
      sentencepiece_json_(other.sentencepiece_json_) {}

Tokenizer& Tokenizer::operator=(const Tokenizer& other) {
  if (this != &other) {
    tokens_ = other.tokens_;
    token_ids_ = other.token_ids_;
    merges_ = other.merges_;
    merge_of_ = other.merge_of_;
    byte_ids_ = other.byte_ids_;
    special_names_ = other.special_names_;
    special_ids_ = other.special_ids_;
    plain_added_ = other.plain_added_;
    split_pattern_ = other.split_pattern_;
    ignore_merges_ = other.ignore_merges_;
    config_ = other.config_;
    nfc_ = other.nfc_;
    sentencepiece_ = other.sentencepiece_;
    prepend_space_ = other.prepend_space_;
    pieces_ = other.pieces_;
    sentencepiece_json_ = other.sentencepiece_json_;
    std::lock_guard<std::mutex> lock(cache_mutex_);
    cache_.clear();
  }
  return *this;
}

void Tokenizer::add_token(std::string bytes) {
  const auto id = static_cast<int32_t>(tokens_.size());
  token_ids_.emplace(bytes, id);
  tokens_.push_back(std::move(bytes));
}

void Tokenizer::add_merge(int32_t a, int32_t b, int32_t result) {
  merge_of_[pair_key(a, b)] = Merge{static_cast<int32_t>(merges_.size()), result};
  merges_.emplace_back(a, b);
}

void Tokenizer::finish_loading(const std::string& source) {
  std::fill(byte_ids_.begin(), byte_ids_.end(), -1);
  std::vector<bool> produced(tokens_.size(), false);
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (sentencepiece_) {
      // <0xNN> byte tokens, and single characters, start symbol sequences.
      const std::string& p = pieces_[id];
      if (const int byte = byte_token_value(p); byte >= 0) {
        byte_ids_[static_cast<uint8_t>(byte)] = static_cast<int32_t>(id);
        produced[id] = true;
      } else {
        const auto lead = static_cast<unsigned char>(p.empty() ? 0 : p[0]);
        const size_t len = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : 4;
        produced[id] = !p.empty() && p.size() == len;
      }
    } else if (tokens_[id].size() == 1) {
      byte_ids_[static_cast<uint8_t>(tokens_[id][0])] = static_cast<int32_t>(id);
      produced[id] = true;
    }
  }
  for (int b = 0; b < 256; ++b) {
    if (byte_ids_[b] < 0) {
      fail(ErrorKind::kData, source, ": the vocabulary has no token for byte ", b,
           sentencepiece_ ? " (<0xNN>); byte fallback needs all 256" : "; a byte-level BPE vocabulary must hold all 256 bytes");
    }
  }
  for (const auto& [key, m] : merge_of_) produced[m.result] = true;
  // A token neither a byte nor the result of a merge can only be inserted
  // explicitly: that is what a special token is.
  for (size_t id = 0; id < tokens_.size(); ++id) {
    const bool plain = std::any_of(plain_added_.begin(), plain_added_.end(),
                                   [&](const auto& p) { return p.second == static_cast<int32_t>(id); });
    if (!produced[id] && !plain &&
        std::find(special_ids_.begin(), special_ids_.end(), static_cast<int32_t>(id)) == special_ids_.end()) {
      special_ids_.push_back(static_cast<int32_t>(id));
      special_names_.push_back(tokens_[id]);
    }
  }
  for (int32_t id : special_ids_) token_ids_.erase(lookup_key(id));
}

bool Tokenizer::is_special(int32_t id) const {
  return std::find(special_ids_.begin(), special_ids_.end(), id) != special_ids_.end();
}

int32_t Tokenizer::find_special(std::string_view name) const {
  for (size_t i = 0; i < special_names_.size(); ++i) {
    if (special_names_[i] == name) return special_ids_[i];
  }
  return -1;
}

int32_t Tokenizer::special_id(std::string_view name) const {
  const int32_t id = find_special(name);
  if (id < 0) {
    fail(ErrorKind::kData, "the tokenizer has no special token '", std::string(name),
         "'. Train a tokenizer with it, or add it (rlhf adds the chat markers when it loads a "
         "GPT-2 vocabulary for SFT).");
  }
  return id;
}

int32_t Tokenizer::token_id(std::string_view name) const {
  if (name.empty()) return -1;
  const int32_t special = find_special(name);
  if (special >= 0) return special;
  auto it = token_ids_.find(std::string(name));
  return it == token_ids_.end() ? -1 : it->second;
}

void Tokenizer::add_special_tokens(const std::vector<std::string>& names) {
  for (const auto& name : names) {
    if (find_special(name) >= 0) continue;
    special_ids_.push_back(static_cast<int32_t>(tokens_.size()));
    special_names_.push_back(name);
    tokens_.push_back(name);
    if (sentencepiece_) pieces_.push_back(name);
  }
}

uint64_t Tokenizer::fingerprint() const {
  uint64_t h = fnv1a64("rlhf-bpe-v1");
  for (const auto& t : tokens_) h = fnv1a64(t, h ^ t.size());
  for (const auto& [a, b] : merges_) h = splitmix64(h ^ pair_key(a, b));
  if (!split_pattern_.empty()) h = fnv1a64(split_pattern_, h);
  if (ignore_merges_) h = splitmix64(h ^ 1);
  if (sentencepiece_) h = fnv1a64(sentencepiece_json_, h ^ 2);
  if (nfc_) h = splitmix64(h ^ 3);
  return h;
}

void Tokenizer::encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const {
  const size_t n = chunk.size();
  if (n == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(chunk[0])]);
    return;
  }
  if (ignore_merges_) {
    auto whole = token_ids_.find(std::string(chunk));
    if (whole != token_ids_.end() && !is_special(whole->second)) {
      out.push_back(whole->second);
      return;
    }
  }
  const bool cacheable = n <= kMaxCachedChunk;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(chunk));
    if (it != cache_.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> ids(n);
  for (size_t i = 0; i < n; ++i) ids[i] = byte_ids_[static_cast<uint8_t>(chunk[i])];
  merge_symbols(ids);
  const size_t start = out.size();
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(std::string(chunk), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

void Tokenizer::merge_symbols(std::vector<int32_t>& ids) const {
  // Symbols form a linked list; candidate merges sit in a min-heap ordered by
  // (rank, position). A merge's result always ranks after its parts, so
  // popping by rank and then position reproduces GPT-2's "merge the lowest
  // ranked pair everywhere, left to right" exactly, in O(n log n).
  const size_t n = ids.size();
  if (n < 2) return;
  std::vector<int32_t> prev(n), next(n);
  std::vector<char> alive(n, 1);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    auto it = merge_of_.find(pair_key(ids[pos], ids[next[pos]]));
    if (it != merge_of_.end()) heap.push({it->second.rank, pos, ids[pos], ids[next[pos]]});
  };
  for (size_t i = 0; i + 1 < n; ++i) consider(static_cast<int32_t>(i));
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t r = next[c.pos];
    if (!alive[c.pos] || ids[c.pos] != c.left || r < 0 || ids[r] != c.right) continue;
    ids[c.pos] = merge_of_.at(pair_key(c.left, c.right)).result;
    alive[r] = 0;
    next[c.pos] = next[r];
    if (next[r] >= 0) prev[next[r]] = c.pos;
    consider(prev[c.pos]);
    consider(c.pos);
  }
  std::vector<int32_t> merged;
  merged.reserve(n);
  for (int32_t i = 0; i >= 0; i = next[i]) merged.push_back(ids[i]);
  ids.swap(merged);
}

// SentencePiece-style: "\u2581" for spaces (one prepended), characters as
// symbols, <0xNN> for a character the vocabulary lacks, then the merges.
void Tokenizer::encode_pieces(std::string_view text, std::vector<int32_t>& out) const {
  static const std::string kSpace = "\xe2\x96\x81";
  if (text.empty()) return;
  std::string norm = prepend_space_ ? kSpace : "";
  for (char c : text) norm += c == ' ' ? kSpace : std::string(1, c);
  std::vector<int32_t> ids;
  ids.reserve(norm.size());
  for (size_t i = 0; i < norm.size();) {
    const auto lead = static_cast<unsigned char>(norm[i]);
    size_t len = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
    if (i + len > norm.size()) len = 1;
    auto it = token_ids_.find(norm.substr(i, len));
    if (it != token_ids_.end()) {
      ids.push_back(it->second);
    } else {
      for (size_t k = 0; k < len; ++k) ids.push_back(byte_ids_[static_cast<uint8_t>(norm[i + k])]);
    }
    i += len;
  }
  merge_symbols(ids);
  out.insert(out.end(), ids.begin(), ids.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  RLHF_CHECK(!tokens_.empty(), "encode() on an empty tokenizer");
  if (!plain_added_.empty()) {
    // Added tokens that are not special are found in any text first, as
    // Hugging Face tokenizers does; the text between them encodes as usual.
    std::vector<int32_t> out;
    size_t piece = 0;
    for (size_t i = 0; i < text.size();) {
      const auto hit = std::find_if(plain_added_.begin(), plain_added_.end(), [&](const auto& p) {
        return text.compare(i, p.first.size(), p.first) == 0;
      });
      if (hit == plain_added_.end()) {
        ++i;
        continue;
      }
      const std::vector<int32_t> before = encode_plain(text.substr(piece, i - piece));
      out.insert(out.end(), before.begin(), before.end());
      out.push_back(hit->second);
      i += hit->first.size();
      piece = i;
    }
    const std::vector<int32_t> rest = encode_plain(text.substr(piece));
    out.insert(out.end(), rest.begin(), rest.end());
    return out;
  }
  return encode_plain(text);
}

std::vector<int32_t> Tokenizer::encode_plain(std::string_view text) const {
  if (text.empty()) return {};
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  if (sentencepiece_) {
    encode_pieces(text, out);
    return out;
  }
  std::string normalized;
  if (nfc_) {
    normalized = nfc(text);
    text = normalized;
  }
  // One compiled pattern per thread and pattern (PCRE2 match data is not shared).
  thread_local std::unordered_map<std::string, std::unique_ptr<PreTokenizer>> pres;
  auto& pre = pres[split_pattern_];
  if (!pre) pre = std::make_unique<PreTokenizer>(split_pattern_);
  pre->split(text, [&](std::string_view chunk) { encode_chunk(chunk, out); });
  return out;
}

std::string Tokenizer::decode_token(int32_t id) const {
  if (id < 0 || id >= vocab_size()) return "";
  return tokens_[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && is_special(id)) continue;
    out += tokens_[id];
  }
  // SentencePiece's decoder strips the space it prepended (Strip(" ", 1, 0)).
  if (sentencepiece_ && prepend_space_ && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

Tokenizer Tokenizer::load_vocab_merges(const std::string& vocab_path,
                                       const std::string& merges_path) {
  JsonMap vocab;
  try {
    vocab = parse_json_unordered(read_file(vocab_path), vocab_path);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kData, vocab_path, ": not valid JSON (", e.what(), ")");
  }
  if (!vocab.is_object() || vocab.empty()) {
    fail(ErrorKind::kData, vocab_path, ": expected a JSON object of token -> id");
  }
  std::vector<std::string> tokens(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) {
      fail(ErrorKind::kData, vocab_path, ": the id of '", it.key(), "' is not an integer");
    }
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()) || seen[id]) {
      fail(ErrorKind::kData, vocab_path, ": ids must be 0..", tokens.size() - 1,
           " without gaps or repeats; '", it.key(), "' has ", id);
    }
    seen[id] = true;
    tokens[id] = bytes_or_fail(it.key(), vocab_path);
  }
  Tokenizer tok;
  for (auto& t : tokens) tok.add_token(std::move(t));

  const std::string merges_text = read_file(merges_path);
  size_t line_no = 0, pos = 0;
  while (pos < merges_text.size()) {
    size_t end = merges_text.find('\n', pos);
    if (end == std::string::npos) end = merges_text.size();
    std::string line = merges_text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 >= line.size()) {
      fail(ErrorKind::kData, merges_path, ":", line_no, ": expected two tokens separated by one space");
    }
    const std::string a = bytes_or_fail(line.substr(0, space), merges_path);
    const std::string b = bytes_or_fail(line.substr(space + 1), merges_path);
    auto ia = tok.token_ids_.find(a), ib = tok.token_ids_.find(b), ir = tok.token_ids_.find(a + b);
    if (ia == tok.token_ids_.end() || ib == tok.token_ids_.end() || ir == tok.token_ids_.end()) {
      fail(ErrorKind::kData, merges_path, ":", line_no, ": the merge '", line,
           "' uses or makes a token missing from ", vocab_path);
    }
    tok.add_merge(ia->second, ib->second, ir->second);
  }
  tok.finish_loading(vocab_path);
  return tok;
}

namespace {

// j[key] for reading a user's tokenizer files: null when j is not an object
// or lacks the key. (nlohmann's const operator[] is undefined behaviour for
// a missing key: found by fuzz/fuzz_tokenizer_json as a use after free.)
const JsonMap& field(const JsonMap& j, const char* key) {
  static const JsonMap null_json;
  if (!j.is_object()) return null_json;
  const auto it = j.find(key);
  return it == j.end() ? null_json : *it;
}

std::string component_type(const JsonMap& j) {
  const JsonMap& type = field(j, "type");
  return type.is_string() ? type.get<std::string>() : j.dump();
}

// What a tokenizer.json asks of the pre-tokenizer and merges, if this
// tokenizer computes it: GPT-2's byte-level BPE, or a Split regex followed by
// byte-level mapping (Llama 3 style), with or without ignore_merges. Any
// other component would encode differently from `tokenizers` without a word,
// so it is an error naming the component.
struct Components {
  std::string split_pattern;  // empty: GPT-2's
  bool ignore_merges = false;
  bool nfc = false;            // the "NFC" normalizer (Qwen2/2.5/3)
  bool sentencepiece = false;  // Llama 2 style: see Tokenizer::sentencepiece_
  bool prepend_space = true;
  std::string sentencepiece_json;
};

bool is_type(const JsonMap& j, const char* type) { return j.is_object() && j.value("type", "") == type; }

const std::string kMetaspace = "\xe2\x96\x81";

// Llama 2 / Mistral / TinyLlama: BPE over characters with byte fallback; the
// normaliser Prepend("\u2581") + Replace(" ", "\u2581") (or the Metaspace
// pre-tokenizer that does the same), and the decoder that undoes it.
Components sentencepiece_components(const JsonMap& root, const std::string& path) {
  auto refuse = [&](const std::string& key, const std::string& what) {
    fail(ErrorKind::kData, path, ": ", key, " ", what,
         " is not supported yet with byte_fallback; this tokenizer implements SentencePiece-style BPE as Llama 2 "
         "ships it (normalizer Prepend + Replace or pre_tokenizer Metaspace without split; decoder Replace, "
         "ByteFallback, Fuse, Strip)");
  };
  Components out;
  out.sentencepiece = true;
  const JsonMap null_json;
  const JsonMap& norm = root.contains("normalizer") ? field(root, "normalizer") : null_json;
  const JsonMap& pre = root.contains("pre_tokenizer") ? field(root, "pre_tokenizer") : null_json;
  if (!norm.is_null()) {
    const JsonMap& steps = is_type(norm, "Sequence") ? field(norm, "normalizers") : JsonMap::array({norm});
    bool prepend = false, replace = false;
    for (const auto& st : steps) {
      if (is_type(st, "Prepend") && st.value("prepend", "") == kMetaspace && !prepend && !replace) {
        prepend = true;
      } else if (is_type(st, "Replace") && st.contains("pattern") && field(st, "pattern").is_object() &&
                 field(st, "pattern").value("String", "") == " " && st.value("content", "") == kMetaspace) {
        replace = true;
      } else {
        refuse("normalizer", component_type(st));
      }
    }
    if (!replace) refuse("normalizer", "without Replace(\" \", \"\u2581\")");
    out.prepend_space = prepend;
    if (!pre.is_null()) refuse("pre_tokenizer", component_type(pre));
  } else if (is_type(pre, "Metaspace")) {
    if (pre.value("replacement", kMetaspace) != kMetaspace) refuse("pre_tokenizer", "Metaspace with another replacement");
    if (pre.value("split", false) == true) refuse("pre_tokenizer", "Metaspace with split = true");
    const std::string scheme = pre.value("prepend_scheme", pre.value("add_prefix_space", true) ? "always" : "never");
    if (scheme == "first") {
      refuse("pre_tokenizer", "Metaspace with prepend_scheme \"first\" (text after a special token differs)");
    }
    out.prepend_space = scheme == "always";
  } else {
    refuse("normalizer/pre_tokenizer", "none of Prepend + Replace or Metaspace");
  }
  const JsonMap& m = field(root, "model");
  if (m.contains("dropout") && !field(m, "dropout").is_null()) refuse("model.dropout", field(m, "dropout").dump());
  if (m.value("ignore_merges", false) == true) refuse("model.ignore_merges", "= true");
  // The decoder must undo exactly that: "\u2581" back to spaces, bytes fused, one leading space stripped.
  if (root.contains("decoder") && !field(root, "decoder").is_null()) {
    const JsonMap& d = field(root, "decoder");
    const JsonMap& steps = is_type(d, "Sequence") ? field(d, "decoders") : JsonMap::array({d});
    for (const auto& st : steps) {
      const bool ok = is_type(st, "ByteFallback") || is_type(st, "Fuse") || is_type(st, "Metaspace") ||
                      (is_type(st, "Replace") && st.value("content", "") == " ") ||
                      (is_type(st, "Strip") && st.value("content", "") == " " && st.value("start", 0) <= 1 &&
                       st.value("stop", 0) == 0);
      if (!ok) refuse("decoder", component_type(st));
    }
  }
  if (root.contains("post_processor") && !field(root, "post_processor").is_null() &&
      !is_type(field(root, "post_processor"), "TemplateProcessing")) {
    refuse("post_processor", component_type(field(root, "post_processor")));
  }
  JsonMap keep = JsonMap::object();
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) {
    keep[key] = root.contains(key) ? root[key] : JsonMap();
  }
  keep["unk_token"] = m.contains("unk_token") ? field(m, "unk_token") : JsonMap();
  keep["fuse_unk"] = m.value("fuse_unk", false);
  out.sentencepiece_json = keep.dump();
  return out;
}

Components supported_components(const JsonMap& root, const std::string& path) {
  auto refuse = [&](const std::string& key, const std::string& what) {
    fail(ErrorKind::kData, path, ": ", key, " ", what,
         " is not supported yet; this tokenizer implements byte-level BPE (no normalizer; GPT-2's ByteLevel "
         "pre-tokenizer, or a Split regex then ByteLevel; no byte fallback)");
  };
  auto byte_level = [](const JsonMap& j) { return j.is_object() && j.value("type", "") == "ByteLevel"; };
  if (field(root, "model").value("byte_fallback", false) == true) return sentencepiece_components(root, path);
  Components out;
  if (root.contains("normalizer") && !field(root, "normalizer").is_null()) {
    if (is_type(field(root, "normalizer"), "NFC")) out.nfc = true;
    else refuse("normalizer", component_type(field(root, "normalizer")));
  }
  if (root.contains("pre_tokenizer") && !field(root, "pre_tokenizer").is_null()) {
    const JsonMap& p = field(root, "pre_tokenizer");
    if (byte_level(p)) {
      if (p.value("use_regex", true) == false) refuse("pre_tokenizer", "ByteLevel with use_regex = false");
    } else if (p.is_object() && p.value("type", "") == "Sequence" && p.contains("pretokenizers") &&
               field(p, "pretokenizers").is_array() && field(p, "pretokenizers").size() == 2) {
      const JsonMap& split = field(p, "pretokenizers")[0];
      const JsonMap& bl = field(p, "pretokenizers")[1];
      const bool regex = split.is_object() && split.value("type", "") == "Split" && split.contains("pattern") &&
                         field(split, "pattern").is_object() && field(split, "pattern").contains("Regex") &&
                         field(split, "pattern")["Regex"].is_string();
      if (!regex || split.value("behavior", "") != "Isolated" || split.value("invert", false) != false) {
        refuse("pre_tokenizer", "Sequence whose first step is not Split(Regex, behavior Isolated)");
      }
      if (!byte_level(bl) || bl.value("use_regex", true) != false) {
        refuse("pre_tokenizer", "Sequence whose second step is not ByteLevel with use_regex = false");
      }
      out.split_pattern = field(split, "pattern")["Regex"].get<std::string>();
    } else {
      refuse("pre_tokenizer", component_type(p));
    }
    if (p.value("add_prefix_space", false) == true) refuse("pre_tokenizer", "with add_prefix_space = true");
  }
  // ByteLevel post-processing and decoding change offsets only, not ids or text.
  for (const char* key : {"decoder", "post_processor"}) {
    if (root.contains(key) && !root[key].is_null() && !byte_level(root[key])) refuse(key, component_type(root[key]));
  }
  const JsonMap& m = field(root, "model");
  out.ignore_merges = m.value("ignore_merges", false) == true;
  if (m.contains("dropout") && !field(m, "dropout").is_null()) refuse("model.dropout", field(m, "dropout").dump());
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (m.contains(key) && m[key].is_string() && !m[key].get<std::string>().empty()) {
      refuse(std::string("model.") + key, "\"" + m[key].get<std::string>() + "\"");
    }
  }
  return out;
}

}  // namespace

namespace {

// A special token entry of tokenizer_config.json: "text" or {"content": "text", ...}.
std::string token_name(const JsonMap& config, const char* key, const std::string& path) {
  if (!config.contains(key) || config[key].is_null()) return "";
  const JsonMap& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (field(v, "content").is_string()) return field(v, "content").get<std::string>();
  fail(ErrorKind::kData, path, ": \"", key, "\" must be a token's text or {\"content\": text}, not ", v.dump());
}

TokenizerConfig read_tokenizer_config(const std::string& dir) {
  TokenizerConfig out;
  const std::string path = join_path(dir, "tokenizer_config.json");
  if (path_exists(path)) {
    JsonMap config;
    try {
      config = parse_json_unordered(read_file(path), path);
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorKind::kData, path, ": not valid JSON (", e.what(), ")");
    }
    if (!config.is_object()) fail(ErrorKind::kData, path, ": expected a JSON object");
    out.bos_token = token_name(config, "bos_token", path);
    out.eos_token = token_name(config, "eos_token", path);
    out.pad_token = token_name(config, "pad_token", path);
    out.unk_token = token_name(config, "unk_token", path);
    if (config.contains("chat_template") && !field(config, "chat_template").is_null()) {
      const JsonMap& t = field(config, "chat_template");
      if (t.is_string()) {
        out.chat_template = t.get<std::string>();
      } else if (t.is_array()) {
        // Named templates ([{"name", "template"}]): the "default" one.
        for (const auto& named : t) {
          if (named.is_object() && named.value("name", "") == "default" && named.contains("template")) {
            out.chat_template = field(named, "template").get<std::string>();
          }
        }
        if (out.chat_template.empty()) {
          fail(ErrorKind::kData, path, ": \"chat_template\" lists named templates but none is called \"default\"; "
               "pass the one to use with --chat_template FILE");
        }
      } else {
        fail(ErrorKind::kData, path, ": \"chat_template\" must be a string (Jinja source)");
      }
      // Checkpoints written before the template drove rendering carry our
      // template without its leading <|endoftext|>, which the policy was
      // nonetheless trained with: they get our template as it is now.
      if (out.chat_template == special::kLegacyChatTemplate) out.chat_template = special::kChatTemplate;
    }
  }
  const std::string jinja_path = join_path(dir, "chat_template.jinja");
  if (path_exists(jinja_path)) out.chat_template = read_file(jinja_path);
  return out;
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  Tokenizer tok;
  TokenizerConfig config;
  try {
    tok = load_files(dir);
    config = read_tokenizer_config(dir);
  } catch (const nlohmann::json::exception& e) {
    // A field of the wrong type somewhere the checks above do not name.
    fail(ErrorKind::kData, dir, ": the tokenizer files have an unexpected shape (", e.what(),
         "); are they a Hugging Face tokenizer.json and tokenizer_config.json?");
  }
  for (std::string* name : {&config.bos_token, &config.eos_token, &config.pad_token, &config.unk_token}) {
    // A name the vocabulary lacks would make every id lookup fail later.
    if (!name->empty() && tok.token_id(*name) < 0) name->clear();
  }
  tok.set_config(std::move(config));
  return tok;
}

Tokenizer Tokenizer::load_files(const std::string& dir) {
  const std::string json_path = join_path(dir, "tokenizer.json");
  if (!path_exists(json_path)) {
    const std::string vocab = join_path(dir, "vocab.json"), merges = join_path(dir, "merges.txt");
    if (!path_exists(vocab) || !path_exists(merges)) {
      fail(ErrorKind::kIo, "no tokenizer in '", dir,
           "': expected tokenizer.json, or vocab.json and merges.txt");
    }
    return load_vocab_merges(vocab, merges);
  }
  JsonMap root;
  try {
    root = parse_json_unordered(read_file(json_path), json_path);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kData, json_path, ": not valid JSON (", e.what(), ")");
  }
  const JsonMap* model = root.contains("model") ? &field(root, "model") : nullptr;
  if (model == nullptr || !model->is_object() || model->value("type", "BPE") != "BPE" ||
      !model->contains("vocab") || !model->contains("merges")) {
    fail(ErrorKind::kData, json_path, ": expected a BPE model with \"vocab\" and \"merges\"");
  }
  const Components components = supported_components(root, json_path);
  const JsonMap& vocab = field((*model), "vocab");
  std::vector<std::string> tokens(vocab.size());
  std::vector<bool> seen(vocab.size(), false);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const int64_t id = it.value().is_number_integer() ? it.value().get<int64_t>() : -1;
    if (id < 0 || id >= static_cast<int64_t>(tokens.size()) || seen[id]) {
      fail(ErrorKind::kData, json_path, ": model.vocab ids must be 0..", tokens.size() - 1,
           " without gaps; '", it.key(), "' has ", it.value().dump());
    }
    seen[id] = true;
    tokens[id] = components.sentencepiece ? it.key() : bytes_or_fail(it.key(), json_path);
  }
  // Added tokens may extend past the model vocabulary.
  std::vector<std::pair<int64_t, std::string>> added;
  std::set<int64_t> plain_added;  // "special": false (e.g. Qwen3's <think>): matched in any text
  if (root.contains("added_tokens") && field(root, "added_tokens").is_array()) {
    for (const auto& a : field(root, "added_tokens")) {
      if (!a.contains("id") || !a.contains("content")) continue;
      added.emplace_back(field(a, "id").get<int64_t>(), field(a, "content").get<std::string>());
      if (a.value("special", true) == false) plain_added.insert(field(a, "id").get<int64_t>());
    }
  }
  std::sort(added.begin(), added.end());
  for (const auto& [id, content] : added) {
    if (id == static_cast<int64_t>(tokens.size())) tokens.push_back(content);
    else if (id < 0 || id > static_cast<int64_t>(tokens.size()))
      fail(ErrorKind::kData, json_path, ": added token '", content, "' has id ", id,
           " past the end of the vocabulary");
    else tokens[id] = content;
  }
  Tokenizer tok;
  tok.sentencepiece_ = components.sentencepiece;
  tok.prepend_space_ = components.prepend_space;
  tok.sentencepiece_json_ = components.sentencepiece_json;
  for (auto& t : tokens) {
    if (!tok.sentencepiece_) {
      tok.add_token(std::move(t));
      continue;
    }
    // Decoded bytes for decoding; the vocabulary string for encoding.
    std::string bytes;
    if (const int byte = byte_token_value(t); byte >= 0) {
      bytes = std::string(1, static_cast<char>(byte));
    } else {
      for (size_t k = 0; k < t.size();) {
        if (t.compare(k, kMetaspace.size(), kMetaspace) == 0) {
          bytes += ' ';
          k += kMetaspace.size();
        } else {
          bytes += t[k++];
        }
      }
    }
    const auto id = static_cast<int32_t>(tok.tokens_.size());
    tok.tokens_.push_back(std::move(bytes));
    tok.token_ids_.emplace(t, id);
    tok.pieces_.push_back(std::move(t));
  }
  for (const auto& [id, content] : added) {
    if (plain_added.count(id)) {
      tok.plain_added_.emplace_back(content, static_cast<int32_t>(id));
      continue;
    }
    tok.special_ids_.push_back(static_cast<int32_t>(id));
    tok.special_names_.push_back(content);
  }
  std::stable_sort(tok.plain_added_.begin(), tok.plain_added_.end(),
                   [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  size_t index = 0;
  for (const auto& m : (*model)["merges"]) {
    ++index;
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) fail(ErrorKind::kData, json_path, ": merge ", index, " ('", s, "') has no space");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      fail(ErrorKind::kData, json_path, ": merge ", index, " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    if (!tok.sentencepiece_) {
      a = bytes_or_fail(a, json_path);
      b = bytes_or_fail(b, json_path);
    }
    auto ia = tok.token_ids_.find(a), ib = tok.token_ids_.find(b), ir = tok.token_ids_.find(a + b);
    if (ia == tok.token_ids_.end() || ib == tok.token_ids_.end() || ir == tok.token_ids_.end()) {
      fail(ErrorKind::kData, json_path, ": merge ", index, " uses or makes a token missing from the vocabulary");
    }
    tok.add_merge(ia->second, ib->second, ir->second);
  }
  tok.split_pattern_ = components.split_pattern;
  tok.ignore_merges_ = components.ignore_merges;
  tok.nfc_ = components.nfc;
  if (!tok.split_pattern_.empty()) PreTokenizer check(tok.split_pattern_);  // a bad regex fails here, naming it
  tok.finish_loading(json_path);
  return tok;
}

void Tokenizer::save(const std::string& dir) const {
  make_dirs(dir);
  JsonMap vocab = JsonMap::object();
  for (size_t id = 0; id < tokens_.size(); ++id) {
    vocab[is_special(static_cast<int32_t>(id)) ? tokens_[id] : to_unicode(tokens_[id])] = id;
  }
  std::string merges_txt = "#version: 0.2\n";
  JsonMap merges = JsonMap::array();
  for (const auto& [a, b] : merges_) {
    std::string line = to_unicode(tokens_[a]) + " " + to_unicode(tokens_[b]);
    merges_txt += line + "\n";
    merges.push_back(line);
  }
  JsonMap added = JsonMap::array();
  for (size_t i = 0; i < special_ids_.size(); ++i) {
    added.push_back({{"id", special_ids_[i]}, {"content", special_names_[i]},
                     {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  }
  for (const auto& [content, id] : plain_added_) {
    added.push_back({{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", false}});
  }
  const JsonMap byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false},
                           {"trim_offsets", true}, {"use_regex", true}};
  JsonMap pre_tokenizer = byte_level;
  if (!split_pattern_.empty()) {
    JsonMap bytes_only = byte_level;
    bytes_only["use_regex"] = false;
    pre_tokenizer = {{"type", "Sequence"},
                     {"pretokenizers",
                      {{{"type", "Split"}, {"pattern", {{"Regex", split_pattern_}}}, {"behavior", "Isolated"},
                        {"invert", false}},
                       bytes_only}}};
  }
  JsonMap root = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr},
               {"added_tokens", added}, {"normalizer", nfc_ ? JsonMap{{"type", "NFC"}} : JsonMap()},
               {"pre_tokenizer", pre_tokenizer}, {"post_processor", byte_level},
               {"decoder", byte_level},
               {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
                          {"continuing_subword_prefix", ""}, {"end_of_word_suffix", ""},
                          {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", ignore_merges_},
                          {"vocab", vocab}, {"merges", merges}}}};
  if (sentencepiece_) {
    // The vocabulary strings and components as the file we loaded had them.
    const JsonMap kept = JsonMap::parse(sentencepiece_json_);
    JsonMap pieces = JsonMap::object();
    for (size_t id = 0; id < pieces_.size(); ++id) pieces[pieces_[id]] = id;
    JsonMap piece_merges = JsonMap::array();
    for (const auto& [a, b] : merges_) piece_merges.push_back(pieces_[a] + " " + pieces_[b]);
    for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"}) root[key] = kept[key];
    root["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", kept["unk_token"]},
                     {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                     {"fuse_unk", kept["fuse_unk"]}, {"byte_fallback", true}, {"ignore_merges", false},
                     {"vocab", pieces}, {"merges", piece_merges}};
  }
  // Our own tokenizers name <|endoftext|> for every role, as GPT-2's do.
  const std::string eot = find_special(special::kEndOfText) >= 0 ? special::kEndOfText
                          : special_names_.empty() ? "" : special_names_[0];
  auto role = [&](const std::string& name, const std::string& fallback) -> Json {
    const std::string v = name.empty() ? fallback : name;
    return v.empty() ? Json(nullptr) : Json(v);
  };
  const bool ours = config_.chat_template.empty();
  Json special_map = {{"bos_token", role(config_.bos_token, ours ? eot : "")},
                      {"eos_token", role(config_.eos_token, eot)},
                      {"unk_token", role(config_.unk_token, ours ? eot : "")}};
  if (!config_.pad_token.empty()) special_map["pad_token"] = config_.pad_token;
  Json config = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"add_prefix_space", false},
                 {"additional_special_tokens", special_names_},
                 // The template that reproduces our prompts in transformers' apply_chat_template.
                 {"chat_template", ours ? std::string(special::kChatTemplate) : config_.chat_template}};
  for (auto it = special_map.begin(); it != special_map.end(); ++it) config[it.key()] = it.value();
  if (!sentencepiece_) {  // the "slow" files of a byte-level BPE (GPT2Tokenizer)
    write_file_atomic(join_path(dir, "vocab.json"), vocab.dump());
    write_file_atomic(join_path(dir, "merges.txt"), merges_txt);
  }
  write_file_atomic(join_path(dir, "tokenizer.json"), root.dump(1));
  write_file_atomic(join_path(dir, "special_tokens_map.json"), special_map.dump(1));
  write_file_atomic(join_path(dir, "tokenizer_config.json"), config.dump(1));
}

}  // namespace rlhf

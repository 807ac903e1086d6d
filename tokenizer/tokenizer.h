// A byte-level BPE tokenizer, the scheme of GPT-2 and Hugging Face
// `tokenizers`: text is split by the GPT-2 pattern, each chunk's UTF-8 bytes
// start as 256 byte tokens, and learned merges join adjacent pairs in rank
// order. Any byte string round-trips exactly.
//
// Special tokens (<|endoftext|>, chat-role markers) have ids of their own and
// are never produced by encode(): text that spells "<|endoftext|>" encodes as
// ordinary characters. Code that needs them (documents, the chat template)
// inserts their ids explicitly.
//
// Files: vocab.json + merges.txt (GPT-2 / HF "slow" format) and
// tokenizer.json (HF "fast" format), so our tokenizers open in `transformers`
// and GPT-2's published vocabulary opens here.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace rlhf {

namespace special {
inline constexpr const char* kEndOfText = "<|endoftext|>";
inline constexpr const char* kSystem = "<|system|>";
inline constexpr const char* kUser = "<|user|>";
inline constexpr const char* kAssistant = "<|assistant|>";
inline constexpr const char* kEndOfTurn = "<|end|>";
// Every tokenizer this project trains reserves these, in this order.
const std::vector<std::string>& defaults();
// Our chat template (Jinja, as tokenizer_config.json carries one):
//   <|endoftext|><|system|>{system}<|end|><|user|>{user}<|end|><|assistant|>...
extern const char* const kChatTemplate;
}  // namespace special

// What tokenizer_config.json (and generation_config.json) add to the
// vocabulary: the chat template and which special tokens play which part.
struct TokenizerConfig {
  // Jinja source (policy/chat.h renders it); empty: none shipped, and chat
  // stages use ours (special::kChatTemplate) with our role markers.
  std::string chat_template;
  std::string bos_token;  // e.g. "<|begin_of_text|>"; empty: none
  std::string eos_token;  // e.g. "<|im_end|>"; empty: none
  std::string pad_token;  // empty: padding uses the end-of-sequence token
  std::string unk_token;
  // Further ids generation stops on (config.json / generation_config.json
  // "eos_token_id"), e.g. Llama 3's <|eot_id|> beside <|end_of_text|>.
  std::vector<int32_t> eos_token_ids;
};

struct TokenizerTrainOptions {
  int vocab_size = 8192;        // total, bytes + merges + special tokens, e.g. 8192
  int64_t min_frequency = 2;    // a pair seen fewer times is never merged
  // Never merge a digit: every digit stays a token of its own (as LLaMA's
  // tokenizer does), so an order number reads, and is copied, digit by digit
  // instead of as arbitrary BPE pieces ("60685" -> "606" "85"). Encoding
  // needs nothing special: no merge involving a digit exists.
  bool split_digits = true;
  std::vector<std::string> special_tokens = special::defaults();
};

class Tokenizer {
 public:
  Tokenizer() = default;
  Tokenizer(const Tokenizer& other);
  Tokenizer& operator=(const Tokenizer& other);

  // Learns merges from documents; deterministic for the same input.
  static Tokenizer train(const std::vector<std::string>& documents,
                         const TokenizerTrainOptions& options);
  // Loads tokenizer.json from `dir`, or else vocab.json + merges.txt, and
  // tokenizer_config.json (chat_template.jinja overrides its template).
  static Tokenizer load(const std::string& dir);
  // GPT-2's encoder.json + vocab.bpe (same formats as vocab.json + merges.txt).
  static Tokenizer load_vocab_merges(const std::string& vocab_path, const std::string& merges_path);
  // Writes vocab.json, merges.txt, tokenizer.json, tokenizer_config.json and
  // special_tokens_map.json into `dir` (created if needed), atomically.
  void save(const std::string& dir) const;

  std::vector<int32_t> encode(std::string_view text) const;
  // Special tokens decode to their text unless skip_special.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  std::string decode_token(int32_t id) const;

  int vocab_size() const { return static_cast<int>(tokens_.size()); }
  int num_merges() const { return static_cast<int>(merges_.size()); }
  bool is_special(int32_t id) const;
  // Id of a special token, or -1.
  int32_t find_special(std::string_view name) const;
  // Id of a special token; fails with a clear error if the tokenizer lacks it.
  int32_t special_id(std::string_view name) const;
  // Appends special tokens that are missing (e.g. chat markers to GPT-2's).
  void add_special_tokens(const std::vector<std::string>& names);
  const std::vector<std::string>& special_tokens() const { return special_names_; }
  const TokenizerConfig& config() const { return config_; }
  void set_config(TokenizerConfig config) { config_ = std::move(config); }
  // Id of a special or added token by its text (e.g. config().eos_token), or
  // -1 for an empty name or one the vocabulary lacks.
  int32_t token_id(std::string_view name) const;
  // A stable digest of vocabulary and merges (and a non-default
  // pre-tokenizer), to detect mismatched files.
  uint64_t fingerprint() const;
  // Special tokens written in the text are encoded as the bytes they are made
  // of, never as the special id, so user text cannot forge a turn marker:
  // Hugging Face's split_special_tokens = true (encode_special_tokens in
  // `tokenizers`). Chat markers come from the chat template only.

 private:
  struct Merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void add_token(std::string bytes);
  void add_merge(int32_t a, int32_t b, int32_t result);
  void finish_loading(const std::string& source);
  static Tokenizer load_files(const std::string& dir);
  void encode_chunk(std::string_view chunk, std::vector<int32_t>& out) const;
  // Applies the merges to a symbol sequence, lowest rank first (then leftmost).
  void merge_symbols(std::vector<int32_t>& ids) const;
  void encode_pieces(std::string_view text, std::vector<int32_t>& out) const;
  std::vector<int32_t> encode_plain(std::string_view text) const;
  const std::string& lookup_key(int32_t id) const { return sentencepiece_ ? pieces_[id] : tokens_[id]; }

  std::vector<std::string> tokens_;                    // id -> raw bytes
  std::unordered_map<std::string, int32_t> token_ids_;  // raw bytes -> id
  std::vector<std::pair<int32_t, int32_t>> merges_;    // rank -> pair
  std::unordered_map<uint64_t, Merge> merge_of_;        // pair -> merge
  std::vector<int32_t> byte_ids_ = std::vector<int32_t>(256, -1);
  std::vector<std::string> special_names_;
  std::vector<int32_t> special_ids_;
  // Added tokens marked "special": false, longest first: encode() finds them
  // in any text (Hugging Face does); decoding keeps them.
  std::vector<std::pair<std::string, int32_t>> plain_added_;
  std::string split_pattern_;   // the pre-tokenizer's regex; empty = GPT-2's
  bool ignore_merges_ = false;  // a chunk that is a token as a whole is that token (Llama 3)
  TokenizerConfig config_;
  bool nfc_ = false;  // text is NFC-normalised before pre-tokenisation (Qwen2/2.5/3)
  // SentencePiece-style BPE (Llama 2, Mistral, TinyLlama): symbols start as
  // characters, a space reads as "\u2581" (with one prepended), and a
  // character outside the vocabulary falls back to its <0xNN> byte tokens.
  // tokens_ then hold each token's decoded bytes and pieces_ its vocabulary
  // string; decoding drops the first leading space.
  bool sentencepiece_ = false;
  bool prepend_space_ = true;
  std::vector<std::string> pieces_;
  std::string sentencepiece_json_;  // tokenizer.json's normalizer, pre_tokenizer, decoder, post_processor, unk

  // Chunk -> ids. Chunks repeat heavily in natural text, so this makes
  // encoding several times faster.
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// GPT-2's reversible map from bytes to printable characters, used for the
// strings in vocab.json / merges.txt. Returns UTF-8.
const std::string& byte_to_unicode(uint8_t byte);
// Inverse of a string of such characters; false if a character is not one.
bool unicode_to_bytes(std::string_view text, std::string& out);

}  // namespace rlhf

// The pre-tokeniser: splits text into chunks with a regular expression
// before byte-pair merging, so merges never cross a chunk. By default GPT-2's
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// or another family's (tokenizer.json's Split regex, e.g. Llama 3's). Text
// between matches becomes chunks too (tokenizers' "Isolated" behaviour).
//
// Unicode classes come from PCRE2 (UTF + UCP, JIT-compiled). Invalid UTF-8
// never matches the pattern; such bytes become chunks of their own, so the
// chunks always concatenate back to the exact input.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace rlhf {

class PreTokenizer {
 public:
  // `pattern` empty: GPT-2's. A pattern PCRE2 rejects is an error naming it.
  explicit PreTokenizer(const std::string& pattern = "");
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Calls `emit` for each chunk, in order. Not thread-safe: give each thread
  // its own PreTokenizer (they are cheap).
  void split(std::string_view text, const std::function<void(std::string_view)>& emit);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace rlhf

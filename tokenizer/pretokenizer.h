// The GPT-2 pre-tokeniser: splits text into chunks with GPT-2's regular
// expression before byte-pair merging, so merges never cross a chunk.
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Unicode classes come from PCRE2 (UTF + UCP, JIT-compiled). Invalid UTF-8
// never matches the pattern; such bytes become chunks of their own, so the
// chunks always concatenate back to the exact input.
#pragma once

#include <functional>
#include <memory>
#include <string_view>

namespace rlhf {

class PreTokenizer {
 public:
  PreTokenizer();
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

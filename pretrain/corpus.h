// Reading a text corpus: plain text files (one document each), JSONL files
// with a "text" field or a "messages" conversation (one document per line,
// a conversation as "Customer: ...\nAgent: ..." lines), or folders of them.
#pragma once

#include <string>
#include <vector>

namespace rlhf {

struct Corpus {
  std::vector<std::string> documents;
  std::vector<std::string> files;  // what was read, sorted
  // Paths, sizes and modification times: changes when any input changes.
  std::string fingerprint;
  size_t total_bytes() const;
};

// Fails with a clear error when a path is missing, a JSONL line is bad, or
// the corpus holds no text at all.
Corpus read_corpus(const std::vector<std::string>& paths, const std::vector<std::string>& extensions);

}  // namespace rlhf

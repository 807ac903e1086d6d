#include "pretrain/corpus.h"

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"

namespace rlhf {

namespace {

// A chat log as plain text ("Customer: ...\nAgent: ..."), so conversations
// can be pretraining text too.
std::string conversation_text(const Json& obj, const std::string& file, size_t line) {
  const Json& messages = obj["messages"];
  if (!messages.is_array()) jsonl_error(file, line, "\"messages\" must be a list of {\"role\", \"content\"}");
  std::string text;
  for (const auto& m : messages) {
    if (!m.is_object() || !m.contains("content") || !m["content"].is_string()) {
      jsonl_error(file, line, "each message needs a string \"content\"");
    }
    const std::string role = m.value("role", "");
    if (role == "system") continue;
    text += (role == "assistant" ? "Agent: " : role == "user" ? "Customer: " : role + ": ");
    text += m["content"].get<std::string>() + "\n";
  }
  return text;
}

}  // namespace

size_t Corpus::total_bytes() const {
  size_t n = 0;
  for (const auto& d : documents) n += d.size();
  return n;
}

Corpus read_corpus(const std::vector<std::string>& paths, const std::vector<std::string>& extensions) {
  if (paths.empty()) {
    fail(ErrorKind::kConfig, "data.corpus is empty: name at least one text file, .jsonl file or folder");
  }
  Corpus corpus;
  uint64_t fp = fnv1a64("corpus-v1");
  for (const std::string& path : paths) {
    if (!path_exists(path)) {
      fail(ErrorKind::kIo, "corpus path '", path, "' does not exist. ",
           "Run scripts/setup.sh to fetch the default corpus, or set data.corpus to your own files.");
    }
    std::vector<std::string> files = list_files(path, extensions);
    if (files.empty()) {
      fail(ErrorKind::kData, "corpus folder '", path, "' has no files ending in any of the data.extensions");
    }
    for (const std::string& file : files) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(file, ec);
      const auto mtime = std::filesystem::last_write_time(file, ec).time_since_epoch().count();
      fp = fnv1a64(file, fp);
      fp = mix_seed({fp, static_cast<uint64_t>(size), static_cast<uint64_t>(mtime)});
      corpus.files.push_back(file);
      const bool jsonl = file.size() > 6 && file.compare(file.size() - 6, 6, ".jsonl") == 0;
      if (jsonl) {
        read_jsonl(file, [&](const Json& obj, size_t line) {
          std::string text = obj.contains("messages") && !obj.contains("text") ? conversation_text(obj, file, line)
                                                                               : jsonl_string(obj, "text", file, line);
          if (!text.empty()) corpus.documents.push_back(std::move(text));
        });
      } else {
        std::string text = read_file(file);
        if (!text.empty()) corpus.documents.push_back(std::move(text));
      }
    }
  }
  if (corpus.documents.empty()) {
    fail(ErrorKind::kData, "the corpus (", paths.front(), paths.size() > 1 ? ", ..." : "",
         ") holds no text: every file is empty. Point data.corpus at files with text in them.");
  }
  corpus.fingerprint = std::to_string(fp);
  return corpus;
}

}  // namespace rlhf

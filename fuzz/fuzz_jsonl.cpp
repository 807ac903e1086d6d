// Preference and conversation JSONL: any bytes as a file for `rlhf labels
// import` (into a store in memory), and each line through the record checks
// the reward model, SFT and prompt loaders use. Bad data is an rlhf::Error
// naming file and line; anything else escaping is a bug.
#include <unistd.h>

#include <string>

#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "labels/store.h"
#include "tokenizer/chat_template.h"

using namespace rlhf;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/rlhf-fuzz-jsonl-" + std::to_string(::getpid()) + ".jsonl";
  set_log_enabled(false);
  const std::string text(reinterpret_cast<const char*>(data), size);
  write_file_atomic(path, text);
  try {
    labels::LabelStore store(":memory:");
    store.import_jsonl(path, "fuzz");
  } catch (const Error&) {
  }
  size_t line = 0;
  for (size_t at = 0; at <= text.size();) {
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string_view row_text(text.data() + at, end - at);
    ++line;
    at = end + 1;
    Json row;
    try {
      row = parse_json(row_text, "fuzz.jsonl");
    } catch (const Error&) {
      continue;  // nested too deep
    } catch (const nlohmann::json::exception&) {
      continue;  // not JSON: parse_json's documented error, which read_jsonl turns into file and line
    }
    try {
      check_preference_record(row, "fuzz.jsonl", line);
      preference_finished_flags(row, "fuzz.jsonl", line);
    } catch (const Error&) {
    }
    try {
      conversation_from_json(row, "fuzz.jsonl", line, true);
    } catch (const Error&) {
    }
    try {
      prompt_from_json(row, "fuzz.jsonl", line, "You are helpful.");
    } catch (const Error&) {
    }
  }
  return 0;
}

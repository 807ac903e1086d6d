// JSON Lines input and output. Every bad line is an error that names the file
// and the line number; blank lines are skipped.
#pragma once

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "common/config.h"

namespace rlhf {

// Calls `fn(object, line_number)` for each line of `path`. A line that is not
// a JSON object is an error naming the file and line. `fn` may throw
// rlhf::Error through jsonl_error() to report a bad field.
void read_jsonl(const std::string& path,
                const std::function<void(const Json&, size_t line)>& fn);

[[noreturn]] void jsonl_error(const std::string& path, size_t line, const std::string& what);

// Reads a required string field, or fails naming file, line and field.
std::string jsonl_string(const Json& obj, const char* field, const std::string& path,
                         size_t line);

// The shape of one preference record, checked before anything reads it:
// either "chosen" and "rejected" (different texts; "tie" a boolean, "margin" a
// finite number) or "responses" (2 or more) with one integer rank in 1..K per
// response in "ranking". Fails naming file, line and field. Shared by the
// label store's import and the reward model's loader.
void check_preference_record(const Json& row, const std::string& path, size_t line);

// Whether each reply of a preference record ended with the end-of-turn
// token (false: cut off at the length limit): "finished", one per response,
// for a ranking; "chosen_finished"/"rejected_finished" for a pair (in that
// order); absent means true. A malformed value fails naming file and line.
std::vector<bool> preference_finished_flags(const Json& row, const std::string& path, size_t line);

// Appends one JSON object per line and flushes each line, so a killed
// process leaves whole lines behind. Owns the FILE*.
class JsonlWriter {
 public:
  JsonlWriter() = default;
  // append=false truncates.
  JsonlWriter(const std::string& path, bool append);
  ~JsonlWriter();
  JsonlWriter(const JsonlWriter&) = delete;
  JsonlWriter& operator=(const JsonlWriter&) = delete;
  JsonlWriter(JsonlWriter&& other) noexcept;
  JsonlWriter& operator=(JsonlWriter&& other) noexcept;

  void write(const Json& obj);
  bool is_open() const { return file_ != nullptr; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace rlhf

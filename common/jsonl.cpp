#include "common/jsonl.h"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace rlhf {

void jsonl_error(const std::string& path, size_t line, const std::string& what) {
  fail(ErrorKind::kData, path, ":", line, ": ", what);
}

std::vector<bool> preference_finished_flags(const Json& row, const std::string& path, size_t line) {
  auto flag = [&](const Json& v, const char* field) {
    if (!v.is_boolean()) jsonl_error(path, line, str_cat("\"", field, "\" must be true or false"));
    return v.get<bool>();
  };
  if (row.contains("responses")) {
    const size_t k = row["responses"].size();
    if (!row.contains("finished")) return std::vector<bool>(k, true);
    if (!row["finished"].is_array() || row["finished"].size() != k) {
      jsonl_error(path, line, "\"finished\" must hold one true/false per response");
    }
    std::vector<bool> out;
    for (const Json& v : row["finished"]) out.push_back(flag(v, "finished"));
    return out;
  }
  return {!row.contains("chosen_finished") || flag(row["chosen_finished"], "chosen_finished"),
          !row.contains("rejected_finished") || flag(row["rejected_finished"], "rejected_finished")};
}

void read_jsonl(const std::string& path,
                const std::function<void(const Json&, size_t line)>& fn) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fail(ErrorKind::kIo, "cannot open '", path, "': ", std::strerror(errno),
         ". Check the path.");
  }
  std::string text;
  size_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (!text.empty() && text.back() == '\r') text.pop_back();
    if (text.find_first_not_of(" \t") == std::string::npos) continue;
    Json obj;
    try {
      obj = Json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      jsonl_error(path, line, str_cat("not valid JSON (", e.what(),
                                      "). Each line must be one JSON object."));
    }
    if (!obj.is_object()) jsonl_error(path, line, "expected a JSON object ({...}) on each line");
    fn(obj, line);
  }
}

std::string jsonl_string(const Json& obj, const char* field, const std::string& path,
                         size_t line) {
  auto it = obj.find(field);
  if (it == obj.end()) jsonl_error(path, line, str_cat("missing the field \"", field, "\""));
  if (!it->is_string()) {
    jsonl_error(path, line, str_cat("the field \"", field, "\" must be a string, not ", it->dump()));
  }
  return it->get<std::string>();
}

JsonlWriter::JsonlWriter(const std::string& path, bool append) : path_(path) {
  file_ = std::fopen(path.c_str(), append ? "ab" : "wb");
  if (file_ == nullptr) {
    fail(ErrorKind::kIo, "cannot open '", path, "' for writing: ", std::strerror(errno));
  }
}

JsonlWriter::~JsonlWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

JsonlWriter::JsonlWriter(JsonlWriter&& other) noexcept
    : path_(std::move(other.path_)), file_(other.file_) {
  other.file_ = nullptr;
}

JsonlWriter& JsonlWriter::operator=(JsonlWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    path_ = std::move(other.path_);
    file_ = other.file_;
    other.file_ = nullptr;
  }
  return *this;
}

void JsonlWriter::write(const Json& obj) {
  if (file_ == nullptr) return;
  const std::string line = obj.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) {
    fail(ErrorKind::kIo, "cannot write to '", path_, "': ", std::strerror(errno));
  }
}

}  // namespace rlhf

#include "common/jsonl.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "common/fs.h"

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

void check_preference_record(const Json& row, const std::string& path, size_t line) {
  if (row.contains("responses") || row.contains("ranking")) {
    const Json& responses = row.contains("responses") ? row["responses"] : Json();
    const Json& ranking = row.contains("ranking") ? row["ranking"] : Json();
    if (!responses.is_array() || responses.size() < 2) {
      jsonl_error(path, line, "\"responses\" must be a list of two or more replies");
    }
    if (!ranking.is_array() || ranking.size() != responses.size()) {
      jsonl_error(path, line, "\"ranking\" must give one rank per response (1 = best; equal ranks are ties)");
    }
    constexpr size_t kMaxResponses = 64;  // a person cannot rank more; keeps the checks below small
    if (responses.size() > kMaxResponses) {
      jsonl_error(path, line, str_cat("a ranking of ", responses.size(), " responses; at most ", kMaxResponses));
    }
    for (size_t i = 0; i < responses.size(); ++i) {
      for (size_t j = i + 1; j < responses.size(); ++j) {
        if (responses[i] == responses[j]) {
          jsonl_error(path, line, str_cat("responses ", i + 1, " and ", j + 1, " are the same reply; rank different ones"));
        }
      }
    }
    const int64_t k = static_cast<int64_t>(responses.size());
    for (const Json& r : ranking) {
      // Read as 64 bits before any narrowing: 4294967297 is not rank 1.
      if (!r.is_number_integer() || r.get<int64_t>() < 1 || r.get<int64_t>() > k) {
        jsonl_error(path, line, str_cat("ranks in \"ranking\" must be integers from 1 (best) to ", k, ", not ", r.dump()));
      }
    }
  } else {
    if (!row.contains("chosen") || !row.contains("rejected")) {
      jsonl_error(path, line, "expected \"chosen\" and \"rejected\" (a pair) or \"responses\" and \"ranking\"");
    }
    if (row["chosen"] == row["rejected"]) {
      jsonl_error(path, line, "\"chosen\" and \"rejected\" are the same reply; a preference needs two different ones");
    }
    if (row.contains("tie") && !row["tie"].is_boolean()) jsonl_error(path, line, "\"tie\" must be true or false");
    if (row.contains("margin") && (!row["margin"].is_number() || !std::isfinite(row["margin"].get<double>()))) {
      jsonl_error(path, line, "\"margin\" must be a finite number");
    }
  }
  preference_finished_flags(row, path, line);
}

void read_jsonl(const std::string& path,
                const std::function<void(const Json&, size_t line)>& fn) {
  if (is_directory(path)) fail(ErrorKind::kIo, "'", path, "' is a folder; name a .jsonl file");
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
      obj = parse_json(text, str_cat(path, ":", line));
    } catch (const nlohmann::json::exception& e) {
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

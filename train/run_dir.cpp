#include "train/run_dir.h"

#include <sstream>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"

namespace rlhf {
namespace {

void diff_keys(const Json& a, const Json& b, const std::string& prefix, std::vector<std::string>& out) {
  for (auto it = a.begin(); it != a.end(); ++it) {
    const std::string key = prefix + it.key();
    if (!b.contains(it.key())) {
      out.push_back(key);
    } else if (it.value().is_object() && b[it.key()].is_object()) {
      diff_keys(it.value(), b[it.key()], key + ".", out);
    } else if (it.value() != b[it.key()]) {
      out.push_back(str_cat(key, " (", it.value().dump(), " -> ", b[it.key()].dump(), ")"));
    }
  }
}

}  // namespace

RunDir::RunDir(std::string path, bool is_main) : path_(std::move(path)), is_main_(is_main) {
  if (is_main_) make_dirs(path_);
}

std::string RunDir::file(const std::string& name) const { return join_path(path_, name); }

void RunDir::save_config(const Json& resolved, const std::vector<std::string>& must_match) {
  const std::string path = file("config.toml");
  if (path_exists(path)) {
    const Json old = toml_file_to_json(path);
    for (const std::string& section : must_match) {
      std::vector<std::string> changed;
      diff_keys(old.value(section, Json::object()), resolved.value(section, Json::object()), section + ".", changed);
      if (!changed.empty()) {
        fail(ErrorKind::kConfig, "the run folder '", path_, "' holds a run with a different [", section,
             "] config (", changed.front(), changed.size() > 1 ? ", ..." : "",
             "). Resuming would mix two runs: choose another out_dir, or delete the folder to start over.");
      }
    }
    std::vector<std::string> changed;
    diff_keys(old, resolved, "", changed);
    if (!changed.empty() && is_main_) {
      std::ostringstream list;
      for (const auto& c : changed) list << "\n  " << c;
      log_info("note: config changed since this run started:", list.str());
    }
  }
  if (is_main_) write_file_atomic(path, json_to_toml(resolved));
}

void RunDir::open_metrics(int64_t resume_step) {
  if (!is_main_) return;
  const std::string path = file("metrics.jsonl");
  if (path_exists(path)) {
    std::string kept;
    std::istringstream in(read_file(path));
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        const Json row = parse_json(line, path);
        if (row.value("step", int64_t{0}) > resume_step) continue;
      } catch (const nlohmann::json::exception&) {
        continue;  // a line cut short by a kill
      }
      kept += line + "\n";
    }
    write_file_atomic(path, kept);
  }
  metrics_ = JsonlWriter(path, /*append=*/true);
}

void RunDir::log_metrics(const Json& row) {
  if (is_main_ && metrics_.is_open()) metrics_.write(row);
}

}  // namespace rlhf

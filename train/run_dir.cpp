#include "train/run_dir.h"

#include <sstream>

#include "common/error.h"
#include "common/fs.h"

namespace rlhf {

RunDir::RunDir(std::string path, bool is_main) : path_(std::move(path)), is_main_(is_main) {
  if (is_main_) make_dirs(path_);
}

std::string RunDir::file(const std::string& name) const { return join_path(path_, name); }

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

#include "train/checkpoints.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "common/error.h"
#include "common/fs.h"

namespace rlhf {
namespace {

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

Json read_json_file(const std::string& path) {
  try {
    return parse_json(read_file(path), path);
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::kCorrupt, path, ": not valid JSON (", e.what(), ")");
  }
}

bool has_model_weights(const std::string& dir) {
  return path_exists(join_path(dir, "model.safetensors")) || path_exists(join_path(dir, "model.safetensors.index.json"));
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%07lld", static_cast<long long>(step));
  return buf;
}

std::optional<std::string> latest_checkpoint(const std::string& run_dir) {
  const std::string pointer = join_path(run_dir, "checkpoints/latest");
  if (!path_exists(pointer)) return std::nullopt;
  const std::string dir = join_path(run_dir, "checkpoints/" + trim(read_file(pointer)));
  if (!has_model_weights(dir)) return std::nullopt;
  return dir;
}

void mark_checkpoint(const std::string& run_dir, const std::string& name, const char* which) {
  write_file_atomic(join_path(run_dir, std::string("checkpoints/") + which), name + "\n");
}

void prune_checkpoints(const std::string& run_dir, int keep) {
  const std::string root = join_path(run_dir, "checkpoints");
  if (keep <= 0 || !is_directory(root)) return;
  std::string best;
  if (path_exists(join_path(root, "best"))) best = trim(read_file(join_path(root, "best")));
  std::string latest;
  if (path_exists(join_path(root, "latest"))) latest = trim(read_file(join_path(root, "latest")));
  std::vector<std::string> steps;
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step-", 0) == 0 && name.find('.') == std::string::npos) {
      steps.push_back(name);
    }
  }
  std::sort(steps.begin(), steps.end());
  const int excess = static_cast<int>(steps.size()) - keep;
  for (int i = 0; i < excess; ++i) {
    if (steps[i] == best || steps[i] == latest) continue;
    remove_all(join_path(root, steps[i]));
  }
}

std::string resolve_checkpoint(const std::string& path, bool prefer_best) {
  if (has_model_weights(path)) return path;
  const std::string root = join_path(path, "checkpoints");
  for (const char* which : {prefer_best ? "best" : "latest", "latest"}) {
    const std::string pointer = join_path(root, which);
    if (path_exists(pointer)) {
      const std::string dir = join_path(root, trim(read_file(pointer)));
      if (has_model_weights(dir)) return dir;
    }
  }
  fail(ErrorKind::kIo, "no checkpoint at '", path,
       "': expected a folder with model.safetensors (or shards with model.safetensors.index.json), or a run folder ",
       "with checkpoints/latest");
}

}  // namespace rlhf

// Where a run keeps its checkpoints, independent of what a checkpoint holds:
//
//   <run>/checkpoints/step-NNNNNNN/   one folder per saved step
//   <run>/checkpoints/latest          names the newest complete one
//   <run>/checkpoints/best            names the best one (stages that rank them)
//
// What goes inside a folder (weights, config.json, tokenizer, trainer state)
// is policy/checkpoint.h's business.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/config.h"

namespace rlhf {

// A JSON file; an error naming the file when it is not valid JSON.
Json read_json_file(const std::string& path);

// Whether `dir` holds a model: model.safetensors, or shards listed in
// model.safetensors.index.json.
bool has_model_weights(const std::string& dir);

// "step-0000042"
std::string checkpoint_name(int64_t step);
// The folder "latest" names, if it holds a model.
std::optional<std::string> latest_checkpoint(const std::string& run_dir);
// Points "latest" (or "best") at `name`.
void mark_checkpoint(const std::string& run_dir, const std::string& name, const char* which = "latest");
// Deletes all but the newest `keep` step folders (never those "best" or
// "latest" name).
void prune_checkpoints(const std::string& run_dir, int keep);

// A checkpoint folder given a run folder or a checkpoint folder: a folder
// holding model weights is used as is; a run folder resolves to its "best"
// checkpoint if asked and present, else its latest.
std::string resolve_checkpoint(const std::string& path, bool prefer_best = false);

}  // namespace rlhf

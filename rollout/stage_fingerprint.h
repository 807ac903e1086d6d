// What a pipeline stage was computed from, so that a finished stage is reused
// only while its inputs are the same: its resolved settings, the files
// outside the run that those settings name (by content), the fingerprints of
// the stages whose output it reads, and the program version.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace rlhf {

struct StageFingerprint {
  std::string stage;    // "sft"
  std::string program;  // program_version(), e.g. "0.1.0+3f2a9c1d04b7"
  Json config;          // the stage's resolved settings
  Json inputs;          // {path: content hash} of files and folders outside the run
  Json upstream;        // {stage: hash} of the stages it reads
  // 16 hex digits over everything above.
  std::string hash() const;
  Json to_json() const;  // the fields above plus "hash"
  // Throws a data error naming `source` when a field is missing.
  static StageFingerprint from_json(const Json& j, const std::string& source);
};

// Content hashes of every existing file or folder that a string in `config`
// names (arrays of strings too), except those under `run_dir`.
Json input_hashes(const Json& config, const std::string& run_dir);

// Content hash of a file, or of a folder's files with their relative names.
std::string path_content_hash(const std::string& path);

// What differs between a recorded fingerprint and the current one, in words,
// one line each: "setting train.lr: 0.001 -> 0.002", "program 0.1.0+abc ->
// 0.1.0+def", "input data/x.jsonl changed", "upstream stage sft changed".
std::vector<std::string> fingerprint_changes(const StageFingerprint& recorded, const StageFingerprint& now);

}  // namespace rlhf

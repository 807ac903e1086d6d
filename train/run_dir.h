// A run folder: every command writes its resolved config, metrics,
// checkpoints and samples into one. Only the main process (rank 0) writes.
// Training stages use it through TrainingRun (train/training_run.h).
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/jsonl.h"

namespace rlhf {

class RunDir {
 public:
  RunDir(std::string path, bool is_main);

  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const;
  bool is_main() const { return is_main_; }

  // Opens metrics.jsonl for appending. Lines of steps after `resume_step`
  // (logged by a killed run after its last checkpoint) are dropped first, so
  // the file reads as one uninterrupted run.
  void open_metrics(int64_t resume_step);
  void log_metrics(const Json& row);

 private:
  std::string path_;
  bool is_main_;
  JsonlWriter metrics_;
};

}  // namespace rlhf

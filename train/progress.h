// The progress line every training loop prints: step, loss, learning rate,
// throughput and ETA, averaged over the steps since the last line.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace rlhf {

class ProgressMeter {
 public:
  ProgressMeter(std::string label, int64_t total_steps, int interval);
  // Records a finished step; prints a line every `interval` steps and at the end.
  void step_done(int64_t done, double loss, double lr, double units, const char* unit_name);
  // Call after work that is not a step (evaluation, checkpoints), so its
  // time does not count in rates or the ETA.
  void pause_done();

 private:
  using Clock = std::chrono::steady_clock;
  std::string label_;
  int64_t total_steps_;
  int interval_;
  double window_loss_ = 0, window_units_ = 0, window_seconds_ = 0, train_seconds_ = 0;
  int window_steps_ = 0;
  int64_t timed_steps_ = 0;
  Clock::time_point last_;
};

}  // namespace rlhf

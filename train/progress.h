// The progress line every training loop prints: step, loss, learning rate,
// throughput and ETA, averaged over the steps since the last line.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/config.h"

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

// Wall-clock seconds per named phase of one iteration of an online loop
// (generation, reward scoring, reference pass, update, ...), for metrics and
// the progress line. start() ends the running phase and starts the next; a
// phase started twice adds up.
class PhaseTimer {
 public:
  void start(const std::string& phase);
  void stop();  // ends the running phase
  double seconds(const std::string& phase) const;  // 0 if never started
  double total() const;
  // {"time/<phase>_s": seconds, ..., "time/iteration_s": total}
  Json metrics() const;
  // "generation 3.1s | reference 0.4s | ..." in the order first started.
  std::string summary() const;

 private:
  using Clock = std::chrono::steady_clock;
  std::vector<std::pair<std::string, double>> phases_;
  int running_ = -1;
  Clock::time_point since_;
};

}  // namespace rlhf

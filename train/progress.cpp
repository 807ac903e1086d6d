#include "train/progress.h"

#include <algorithm>
#include <cstdio>

#include "common/log.h"

namespace rlhf {

ProgressMeter::ProgressMeter(std::string label, int64_t total_steps, int interval)
    : label_(std::move(label)),
      total_steps_(total_steps),
      interval_(std::max(1, interval)),
      last_(Clock::now()) {}

void ProgressMeter::step_done(int64_t done, double loss, double lr, double units, const char* unit_name) {
  const auto now = Clock::now();
  const double step_seconds = std::chrono::duration<double>(now - last_).count();
  train_seconds_ += step_seconds;
  window_seconds_ += step_seconds;
  last_ = now;
  ++timed_steps_;
  window_loss_ += loss;
  window_units_ += units;
  ++window_steps_;
  if (done % interval_ != 0 && done != total_steps_) return;
  const double secs = std::max(1e-9, window_seconds_);
  const double eta = (total_steps_ - done) * train_seconds_ / std::max<int64_t>(timed_steps_, 1);
  log_info(label_, " step ", done, "/", total_steps_, " | loss ", window_loss_ / window_steps_, " | lr ", lr, " | ",
           format_count(window_units_ / secs), " ", unit_name, "/s | ETA ", format_duration(eta));
  window_seconds_ = 0;
  window_loss_ = 0;
  window_units_ = 0;
  window_steps_ = 0;
}

void ProgressMeter::pause_done() { last_ = Clock::now(); }

void PhaseTimer::start(const std::string& phase) {
  stop();
  auto it = std::find_if(phases_.begin(), phases_.end(), [&](const auto& p) { return p.first == phase; });
  if (it == phases_.end()) it = phases_.insert(phases_.end(), {phase, 0.0});
  running_ = static_cast<int>(it - phases_.begin());
  since_ = Clock::now();
}

void PhaseTimer::stop() {
  if (running_ < 0) return;
  phases_[static_cast<size_t>(running_)].second += std::chrono::duration<double>(Clock::now() - since_).count();
  running_ = -1;
}

double PhaseTimer::seconds(const std::string& phase) const {
  for (const auto& [name, s] : phases_) {
    if (name == phase) return s;
  }
  return 0;
}

double PhaseTimer::total() const {
  double t = 0;
  for (const auto& p : phases_) t += p.second;
  return t;
}

Json PhaseTimer::metrics() const {
  Json out = Json::object();
  for (const auto& [name, s] : phases_) out["time/" + name + "_s"] = s;
  out["time/iteration_s"] = total();
  return out;
}

std::string PhaseTimer::summary() const {
  std::string out;
  char buf[64];
  for (const auto& [name, s] : phases_) {
    std::snprintf(buf, sizeof(buf), "%s%s %.1fs", out.empty() ? "" : " ", name.c_str(), s);
    out += buf;
  }
  return out;
}

}  // namespace rlhf

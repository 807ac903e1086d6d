// The rater tool's state, apart from drawing: the current task, the draft
// judgement (strength, rationale, ranks, ratings), skip and undo, progress,
// and the labels not yet acknowledged. Labels are queued first and removed
// only when the backend acknowledges them, so a lost connection loses
// nothing; each carries a client id, so a resend after a reconnect is never
// doubled. Tested without a window (tests/test_rater_ui.cpp).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "feedback-ui/backend.h"

namespace rlhf::ui {

enum class PairChoice { kLeft, kRight, kTie, kBothBad };

struct Draft {
  int strength = 0;          // 0 unspecified, 1 slightly, 2 clearly better
  std::string rationale;
  std::vector<int> ranks;    // ranking tasks: rank per shown reply, 1 = best
  std::vector<int> ratings;  // 1-7 per shown reply when the task asks (0 = not given)
};

class RaterSession {
 public:
  // `client_prefix` makes client ids unique across sessions (e.g. a random hex).
  RaterSession(RatingBackend& backend, std::string client_prefix);

  // Loads the next task when there is none; refreshes progress.
  void refresh();
  const std::optional<labels::RatingTask>& task() const { return task_; }
  Draft& draft() { return draft_; }
  const Draft& draft() const { return draft_; }

  // Labels the current pair task; false (with status()) when not possible.
  bool choose(PairChoice choice);
  // Labels the current ranking task from draft().ranks.
  bool submit_ranking();
  // Puts the task aside for this session and loads the next one.
  void skip();
  // Takes back the most recent label (unsent: dropped; sent: undone on the
  // server) and shows that task again.
  bool undo();
  // Sends queued labels in order; on a lost connection keeps them and marks
  // the session disconnected.
  void flush();
  // Tries to reconnect and resend.
  bool reconnect();

  bool connected() const { return connected_; }
  const std::string& status() const { return status_; }
  size_t unsent() const { return queue_.size(); }
  size_t labelled_this_session() const { return labelled_; }
  size_t skipped() const { return skipped_.size(); }
  // Labels per hour since the first label of this session.
  double pace_per_hour() const;
  // Mean seconds from a task appearing to its label, this session (0 before
  // the first label); and the seconds the current task has been shown.
  double seconds_per_label() const;
  double seconds_on_task() const;
  // The clock the timings read (tests set a fake one).
  using Clock = std::function<std::chrono::steady_clock::time_point()>;
  void set_clock(Clock clock) { clock_ = std::move(clock); }
  const labels::RaterProgress& progress() const { return progress_; }
  const std::vector<labels::Label>& sent() const { return sent_; }

 private:
  void queue_label(labels::Label label);
  void load_next(int64_t prefer = 0);
  void set_disconnected(const std::string& why);

  RatingBackend& backend_;
  std::string prefix_;
  uint64_t counter_ = 0;
  std::optional<labels::RatingTask> task_;
  Draft draft_;
  std::deque<labels::Label> queue_;     // not yet acknowledged, oldest first
  std::vector<labels::Label> sent_;     // acknowledged this session
  std::vector<int64_t> skipped_;
  size_t labelled_ = 0;
  bool connected_ = true;
  std::string status_;
  labels::RaterProgress progress_;
  std::optional<std::chrono::steady_clock::time_point> first_label_;
  Clock clock_ = [] { return std::chrono::steady_clock::now(); };
  std::chrono::steady_clock::time_point task_shown_{};
  double label_seconds_ = 0;  // summed over this session's labels
};

}  // namespace rlhf::ui

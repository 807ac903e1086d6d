#include "feedback-ui/rater_session.h"

#include <algorithm>

#include "common/error.h"

namespace rlhf::ui {

RaterSession::RaterSession(RatingBackend& backend, std::string client_prefix)
    : backend_(backend), prefix_(std::move(client_prefix)) {}

void RaterSession::set_disconnected(const std::string& why) {
  connected_ = false;
  status_ = "connection lost: " + why + " (labels are kept and re-sent on reconnect)";
}

void RaterSession::load_next(int64_t prefer) {
  draft_ = Draft();
  task_.reset();
  try {
    task_ = backend_.next_task(skipped_, prefer);
    progress_ = backend_.progress();
    connected_ = true;
  } catch (const Error& e) {
    if (e.kind() == ErrorKind::kNetwork) set_disconnected(e.what());
    else status_ = e.what();
    return;
  }
  if (task_) {
    task_shown_ = clock_();
    draft_.ranks.assign(task_->replies.size(), 0);
    draft_.ratings.assign(task_->replies.size(), 0);
  }
}

void RaterSession::refresh() {
  if (!task_) load_next();
}

void RaterSession::queue_label(labels::Label label) {
  label.client_id = prefix_ + "-" + std::to_string(++counter_);
  for (const auto& r : task_->replies) label.shown_order.push_back(r.candidate_id);
  label.strength = draft_.strength;
  label.rationale = draft_.rationale;
  if (task_->ask_ratings && std::all_of(draft_.ratings.begin(), draft_.ratings.end(), [](int v) { return v >= 1; }))
    label.ratings = draft_.ratings;
  queue_.push_back(std::move(label));
  ++labelled_;
  label_seconds_ += seconds_on_task();
  if (!first_label_) first_label_ = clock_();
  flush();
  load_next();
}

bool RaterSession::choose(PairChoice choice) {
  if (!task_) return false;
  if (task_->ranking) {
    status_ = "this task is a ranking: give each reply a rank";
    return false;
  }
  labels::Label l;
  l.comparison_id = task_->comparison_id;
  switch (choice) {
    case PairChoice::kLeft: l.choice = labels::Choice::kA; break;
    case PairChoice::kRight: l.choice = labels::Choice::kB; break;
    case PairChoice::kTie: l.choice = labels::Choice::kTie; break;
    case PairChoice::kBothBad: l.choice = labels::Choice::kBothBad; break;
  }
  if (choice == PairChoice::kTie || choice == PairChoice::kBothBad) draft_.strength = 0;
  status_.clear();
  queue_label(std::move(l));
  return true;
}

bool RaterSession::submit_ranking() {
  if (!task_ || !task_->ranking) return false;
  const int k = static_cast<int>(task_->replies.size());
  for (int r : draft_.ranks)
    if (r < 1 || r > k) {
      status_ = "give every reply a rank from 1 (best) to " + std::to_string(k) + "; equal ranks are ties";
      return false;
    }
  labels::Label l;
  l.comparison_id = task_->comparison_id;
  l.choice = labels::Choice::kRanking;
  l.ranking = draft_.ranks;
  status_.clear();
  queue_label(std::move(l));
  return true;
}

void RaterSession::skip() {
  if (!task_) return;
  skipped_.push_back(task_->comparison_id);
  load_next();
}

bool RaterSession::undo() {
  int64_t comparison = 0;
  if (!queue_.empty()) {
    comparison = queue_.back().comparison_id;  // never reached the server
    queue_.pop_back();
  } else {
    try {
      comparison = backend_.undo();
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNetwork) set_disconnected(e.what());
      else status_ = e.what();
      return false;
    }
    if (comparison == 0) {
      status_ = "nothing to undo";
      return false;
    }
    auto it = std::find_if(sent_.rbegin(), sent_.rend(),
                           [&](const labels::Label& l) { return l.comparison_id == comparison; });
    if (it != sent_.rend()) sent_.erase(std::next(it).base());
  }
  if (labelled_ > 0) --labelled_;
  skipped_.erase(std::remove(skipped_.begin(), skipped_.end(), comparison), skipped_.end());
  status_ = "label taken back";
  load_next(comparison);
  return true;
}

void RaterSession::flush() {
  while (!queue_.empty()) {
    try {
      const int64_t id = backend_.submit(queue_.front());
      queue_.front().id = id;
      sent_.push_back(queue_.front());
      queue_.pop_front();
      connected_ = true;
    } catch (const Error& e) {
      if (e.kind() == ErrorKind::kNetwork) {
        set_disconnected(e.what());
        return;
      }
      // Refused (e.g. the comparison is gone): say so and drop only this label.
      status_ = std::string("label not accepted: ") + e.what();
      queue_.pop_front();
      if (labelled_ > 0) --labelled_;
    }
  }
}

bool RaterSession::reconnect() {
  try {
    backend_.reconnect();
  } catch (const Error& e) {
    set_disconnected(e.what());
    return false;
  }
  connected_ = true;
  status_ = "reconnected";
  flush();
  if (connected_ && !task_) load_next();
  return connected_;
}

double RaterSession::seconds_per_label() const { return labelled_ ? label_seconds_ / labelled_ : 0; }

double RaterSession::seconds_on_task() const {
  return task_ ? std::chrono::duration<double>(clock_() - task_shown_).count() : 0;
}

double RaterSession::pace_per_hour() const {
  if (!first_label_ || labelled_ == 0) return 0;
  const double h = std::chrono::duration<double>(clock_() - *first_label_).count() / 3600.0;
  return h > 0 ? labelled_ / std::max(h, 1.0 / 60) : 0;
}

}  // namespace rlhf::ui

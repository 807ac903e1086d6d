// The compare view's state: two policies' replies to the same validation
// prompts (from `rlhf compare`'s replies.jsonl), shown blind in a random
// order per prompt; the person votes and a running win tally with its
// bootstrap 95% interval is kept. Each vote is appended to
// human_votes.jsonl in the same folder as it is cast, and a later session
// continues the tally from there. The leaderboard from compare.json is shown
// alongside. Tested without a window.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/jsonl.h"
#include "common/stats.h"
#include "feedback-ui/rater_session.h"

namespace rlhf::ui {

struct CompareItem {
  std::vector<labels::TaskMessage> conversation;
  std::string reply_a, reply_b;  // of policy a and b
};

struct LeaderboardRow {
  std::string name;
  double mean_reward = 0, mean_gold = 0;
};

class CompareSession {
 public:
  // Reads `dir`/replies.jsonl (and compare.json when present); `a` and `b`
  // name two policies in it (empty: the first two). Errors name file and line.
  CompareSession(const std::string& dir, std::string a, std::string b, uint64_t seed = 1);

  const std::string& policy_a() const { return a_; }
  const std::string& policy_b() const { return b_; }
  size_t size() const { return items_.size(); }
  size_t position() const { return pos_; }
  bool done() const { return pos_ >= items_.size(); }
  const CompareItem& item() const { return items_.at(pos_); }
  // True when policy a's reply is shown on the left for the current item.
  bool a_on_left() const { return left_is_a_.at(pos_); }
  // Records the vote for the current item (left/right/tie/both bad, as shown) and moves on.
  void vote(PairChoice choice);
  // The current tally: policy a's win rate against b, ties and both-bad as half.
  WinRate tally(int bootstrap = 1000) const;
  const std::vector<LeaderboardRow>& leaderboard() const { return leaderboard_; }
  // After a vote: which policy wrote which reply of the prompt just judged.
  const std::string& last_reveal() const { return reveal_; }

 private:
  std::string a_, b_;
  std::vector<CompareItem> items_;
  std::vector<bool> left_is_a_;
  std::vector<double> outcomes_;  // for policy a: 1 win, 0.5 tie, 0 loss
  std::vector<LeaderboardRow> leaderboard_;
  std::string reveal_;
  std::string votes_path_;
  JsonlWriter votes_;
  size_t pos_ = 0;
  uint64_t seed_;
};

}  // namespace rlhf::ui

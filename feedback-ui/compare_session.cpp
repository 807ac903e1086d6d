#include "feedback-ui/compare_session.h"

#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"

namespace rlhf::ui {

CompareSession::CompareSession(const std::string& dir, std::string a, std::string b, uint64_t seed)
    : a_(std::move(a)), b_(std::move(b)), seed_(seed) {
  const std::string path = dir + "/replies.jsonl";
  if (!std::filesystem::exists(path))
    fail(ErrorKind::kIo, "'", path, "' does not exist: point --compare at the output folder of `rlhf compare`");
  SplitMix rng(mix_seed({seed, 0xc0}));
  read_jsonl(path, [&](const Json& row, size_t line) {
    if (!row.contains("replies") || !row["replies"].is_object() || !row.contains("prompt") || !row["prompt"].is_array())
      jsonl_error(path, line, "expected {\"prompt\": [...], \"replies\": {policy: {...}}} as `rlhf compare` writes");
    const Json& replies = row["replies"];
    if (a_.empty() || b_.empty()) {
      std::vector<std::string> names;
      for (auto it = replies.begin(); it != replies.end(); ++it) names.push_back(it.key());
      if (names.size() < 2) jsonl_error(path, line, "fewer than two policies' replies");
      if (a_.empty()) a_ = names[0];
      if (b_.empty()) b_ = names[0] == a_ ? names[1] : names[0];
    }
    if (!replies.contains(a_) || !replies.contains(b_))
      jsonl_error(path, line, "no replies from policy '" + (replies.contains(a_) ? b_ : a_) + "'");
    CompareItem item;
    for (const Json& m : row["prompt"])
      item.conversation.push_back({m.value("role", std::string()), m.value("content", std::string())});
    item.reply_a = replies[a_].value("response", std::string());
    item.reply_b = replies[b_].value("response", std::string());
    items_.push_back(std::move(item));
    left_is_a_.push_back(rng.next() % 2 == 0);
  });
  const std::string report = dir + "/compare.json";
  if (std::filesystem::exists(report)) {
    Json j;
    try {
      j = parse_json(read_file(report), report);
    } catch (const Json::exception& e) {
      fail(ErrorKind::kCorrupt, "'", report, "' is not valid JSON (", e.what(), "); rerun `rlhf compare`");
    }
    for (const Json& p : j.value("policies", Json::array()))
      leaderboard_.push_back({p.value("name", std::string()), p.value("mean_reward", 0.0), p.value("mean_gold", 0.0)});
  }
  // Votes already given for this pair of policies: the tally continues where it stopped.
  votes_path_ = dir + "/human_votes.jsonl";
  if (std::filesystem::exists(votes_path_)) {
    read_jsonl(votes_path_, [&](const Json& v, size_t line) {
      if (v.value("a", std::string()) != a_ || v.value("b", std::string()) != b_) return;
      const int64_t index = v.value("prompt_index", int64_t{-1});
      if (index != static_cast<int64_t>(pos_) || !v.contains("outcome_a") || !v["outcome_a"].is_number())
        jsonl_error(votes_path_, line, "vote out of order or without outcome_a; move the file aside to start over");
      outcomes_.push_back(v["outcome_a"].get<double>());
      ++pos_;
    });
  }
  votes_ = JsonlWriter(votes_path_, /*append=*/true);
}

void CompareSession::vote(PairChoice choice) {
  if (done()) return;
  double left = 0.5;
  if (choice == PairChoice::kLeft) left = 1;
  if (choice == PairChoice::kRight) left = 0;
  const double outcome = a_on_left() ? left : 1 - left;
  static const char* names[] = {"left", "right", "tie", "both_bad"};
  votes_.write({{"a", a_}, {"b", b_}, {"prompt_index", pos_}, {"a_on_left", a_on_left()},
                {"choice", names[static_cast<int>(choice)]}, {"outcome_a", outcome}});
  outcomes_.push_back(outcome);
  reveal_ = "previous prompt: A was " + (a_on_left() ? a_ : b_) + ", B was " + (a_on_left() ? b_ : a_);
  ++pos_;
}

WinRate CompareSession::tally(int bootstrap) const { return win_rate(outcomes_, bootstrap, seed_); }

}  // namespace rlhf::ui

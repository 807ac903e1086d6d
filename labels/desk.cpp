#include "labels/desk.h"

#include <algorithm>
#include <set>

#include "common/error.h"
#include "common/hash.h"
#include "labels/token.h"

namespace rlhf::labels {

RatingDesk::RatingDesk(LabelStore& store, DeskConfig config)
    : store_(store), config_(config), rng_(mix_seed({static_cast<uint64_t>(config.seed), 0xde5c})) {}

std::optional<Rater> RatingDesk::authenticate(const std::string& token) {
  if (token.empty()) return std::nullopt;
  return store_.rater_by_token_hash(sha256_hex(token));
}

namespace {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

RatingTask RatingDesk::make_task(const Comparison& c, const Rater& rater, uint32_t remaining) {
  RatingTask t;
  t.comparison_id = c.id;
  const Prompt p = store_.prompt(c.prompt_id);
  if (p.messages.is_array())
    for (const auto& m : p.messages)
      t.conversation.push_back({m.value("role", std::string()), m.value("content", std::string())});
  std::vector<int64_t> order = c.candidates;
  // Per rater and comparison, and stable: fetching the task again shows the same order.
  SplitMix r(mix_seed({static_cast<uint64_t>(config_.seed), static_cast<uint64_t>(rater.id), static_cast<uint64_t>(c.id)}));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[r.next() % i]);
  for (int64_t id : order) {
    const Candidate cand = store_.candidate(id);
    t.replies.push_back({id, cand.text, cand.finished});
  }
  t.ranking = c.is_ranking();
  t.ask_ratings = config_.ask_ratings;
  t.remaining = remaining;
  return t;
}

std::optional<RatingTask> RatingDesk::next_task(const Rater& rater, const std::vector<int64_t>& exclude,
                                                int64_t prefer) {
  if (exclude.size() > kMaxExclude)
    fail(ErrorKind::kData, "next task: at most ", kMaxExclude, " skipped comparisons may be listed, got ", exclude.size());
  const std::set<int64_t> skip(exclude.begin(), exclude.end());
  const double now = unix_now();
  // Everything is asked of the store (offers included), so several desks on
  // one store agree and nothing scans every comparison.
  const std::vector<int64_t> gold = store_.open_gold_for(rater.id);
  const size_t remaining = store_.count_open_for(rater.id);
  std::optional<int64_t> pick;
  if (prefer != 0 && (std::count(gold.begin(), gold.end(), prefer) || store_.is_available(prefer, rater.id, now)))
    pick = prefer;
  std::vector<int64_t> gold_open;
  for (int64_t id : gold)
    if (!skip.count(id)) gold_open.push_back(id);
  if (!pick && !gold_open.empty() && remaining > 0 &&
      std::uniform_real_distribution<double>(0, 1)(rng_) < config_.gold_rate)
    pick = gold_open[rng_() % gold_open.size()];
  if (!pick) {
    if (auto c = store_.next_available(rater.id, now, skip)) pick = c->id;
  }
  if (!pick) return std::nullopt;
  store_.offer(*pick, rater.id, now, now + config_.lease_seconds);
  return make_task(store_.comparison(*pick), rater, static_cast<uint32_t>(std::max<size_t>(remaining, 1)));
}

int64_t RatingDesk::submit(const Rater& rater, Label label) {
  if (label.client_id.size() > kMaxClientIdBytes)
    fail(ErrorKind::kData, "client id of ", label.client_id.size(), " bytes: at most ", kMaxClientIdBytes);
  if (label.rationale.size() > static_cast<size_t>(config_.max_rationale_bytes))
    fail(ErrorKind::kData, "rationale of ", label.rationale.size(), " bytes: at most ", config_.max_rationale_bytes,
         " (the service's desk.max_rationale_bytes); shorten it");
  const Comparison c = store_.comparison(label.comparison_id);
  std::vector<int64_t> shown = label.shown_order, stored = c.candidates;
  std::sort(shown.begin(), shown.end());
  std::sort(stored.begin(), stored.end());
  if (shown != stored)
    fail(ErrorKind::kData, "shown_order must list the comparison's ", c.candidates.size(), " candidates once each");
  // Every list is checked against the task's shape before it is read:
  // ranks and ratings are indexed by the shown order below.
  if (c.is_ranking()) {
    if (label.choice != Choice::kRanking || label.ranking.size() != c.candidates.size())
      fail(ErrorKind::kData, "comparison ", c.id, " is a ranking of ", c.candidates.size(),
           " replies: send choice 'ranking' and one rank per reply");
    for (int r : label.ranking)
      if (r < 1 || r > static_cast<int>(c.candidates.size()))
        fail(ErrorKind::kData, "rank ", r, " is out of range 1..", c.candidates.size());
  } else if (label.choice == Choice::kRanking || !label.ranking.empty()) {
    fail(ErrorKind::kData, "comparison ", c.id, " is a pair: choose a, b, tie or both_bad, and send no ranking");
  }
  if (!label.ratings.empty()) {
    if (label.ratings.size() != c.candidates.size())
      fail(ErrorKind::kData, "ratings: one 1-7 rating per reply (", c.candidates.size(), "), got ", label.ratings.size());
    for (int r : label.ratings)
      if (r < 1 || r > 7) fail(ErrorKind::kData, "rating ", r, " is out of range 1..7");
  }
  if (label.strength < 0 || label.strength > 2) fail(ErrorKind::kData, "strength must be 0, 1 or 2");
  // Ranks and ratings arrive aligned with the shown order; the store keeps them per stored candidate.
  auto to_stored = [&](const std::vector<int>& shown_values) {
    if (shown_values.empty()) return shown_values;
    std::vector<int> out(c.candidates.size());
    for (size_t j = 0; j < label.shown_order.size(); ++j) {
      const size_t i = std::find(c.candidates.begin(), c.candidates.end(), label.shown_order[j]) - c.candidates.begin();
      out[i] = shown_values[j];
    }
    return out;
  };
  // a / b arrive as left / right; the store keeps them relative to the stored candidates.
  if (!c.is_ranking() && label.shown_order.front() != c.candidates.front()) {
    if (label.choice == Choice::kA) label.choice = Choice::kB;
    else if (label.choice == Choice::kB) label.choice = Choice::kA;
  }
  label.ranking = to_stored(label.ranking);
  label.ratings = to_stored(label.ratings);
  label.rater_id = rater.id;
  label.id = 0;
  label.created_at.clear();
  // Only what was handed to this rater may be labelled, while it still needs
  // labels. A resend of a committed label (same client id) is answered by
  // the store with the first id.
  if (!store_.label_by_client_id(rater.id, label.client_id) && !store_.has_labelled(c.id, rater.id)) {
    if (!store_.was_offered(c.id, rater.id))
      fail(ErrorKind::kData, "comparison ", c.id, " was not handed to you: label the tasks the service gives you");
    if (!c.is_gold && store_.label_count(c.id) >= static_cast<size_t>(c.required_raters))
      fail(ErrorKind::kData, "comparison ", c.id, " already has its ", c.required_raters,
           " label(s) (your hold on it had expired); this label was not stored: take the next task");
  }
  return store_.add_label(std::move(label));
}

int64_t RatingDesk::undo(const Rater& rater) { return store_.undo_last_label(rater.id).value_or(0); }

RaterProgress RatingDesk::progress(const Rater& rater) {
  const RaterCounts n = store_.rater_counts(rater.id);
  RaterProgress p;
  p.rater = rater.name;
  p.labels = static_cast<uint32_t>(n.labels);
  p.gold_seen = static_cast<uint32_t>(n.gold_seen);
  p.gold_correct = static_cast<uint32_t>(n.gold_correct);
  p.remaining = static_cast<uint32_t>(store_.count_open_for(rater.id));
  return p;
}

}  // namespace rlhf::labels

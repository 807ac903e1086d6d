#include "labels/desk.h"

#include <algorithm>
#include <set>

#include "common/error.h"
#include "common/hash.h"
#include "labels/token.h"

namespace rlhf::labels {

using Clock = std::chrono::steady_clock;

RatingDesk::RatingDesk(LabelStore& store, DeskConfig config)
    : store_(store), config_(config), rng_(mix_seed({static_cast<uint64_t>(config.seed), 0xde5c})) {}

std::optional<Rater> RatingDesk::authenticate(const std::string& token) {
  if (token.empty()) return std::nullopt;
  return store_.rater_by_token_hash(sha256_hex(token));
}

bool RatingDesk::leased_by_other(int64_t comparison, int64_t rater, size_t* count) {
  *count = 0;
  auto it = leases_.find(comparison);
  if (it == leases_.end()) return false;
  const auto now = Clock::now();
  bool other = false;
  for (auto l = it->second.begin(); l != it->second.end();) {
    if (l->second < now) {
      l = it->second.erase(l);
      continue;
    }
    if (l->first != rater) ++*count, other = true;
    ++l;
  }
  return other;
}

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
  const std::set<int64_t> skip(exclude.begin(), exclude.end());
  std::vector<Comparison> regular, gold;
  for (Comparison& c : store_.open_comparisons_for(rater.id)) {
    if (skip.count(c.id)) continue;
    (c.is_gold ? gold : regular).push_back(std::move(c));
  }
  // A comparison is available while its labels plus other raters' live leases
  // leave room for one more rater. The store already returned only those with
  // fewer labels than required, so labels are counted only where others hold leases.
  std::vector<const Comparison*> available;
  const Comparison* preferred = nullptr;
  for (const Comparison& c : regular) {
    size_t leased = 0;
    if (leased_by_other(c.id, rater.id, &leased) &&
        store_.labels_of_comparison(c.id).size() + leased >= static_cast<size_t>(c.required_raters))
      continue;
    available.push_back(&c);
    if (c.id == prefer) preferred = &c;
  }
  for (const Comparison& c : gold)
    if (c.id == prefer) preferred = &c;
  const uint32_t remaining = static_cast<uint32_t>(available.size());
  const Comparison* pick = preferred;
  if (pick == nullptr && !gold.empty() &&
      (available.empty() ? false : std::uniform_real_distribution<double>(0, 1)(rng_) < config_.gold_rate))
    pick = &gold[rng_() % gold.size()];
  if (pick == nullptr && !available.empty()) pick = available.front();
  if (pick == nullptr) return std::nullopt;
  leases_[pick->id][rater.id] = Clock::now() + std::chrono::seconds(config_.lease_seconds);
  return make_task(*pick, rater, std::max<uint32_t>(remaining, 1));
}

int64_t RatingDesk::submit(const Rater& rater, Label label) {
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
  const int64_t id = store_.add_label(std::move(label));
  leases_[c.id].erase(rater.id);
  return id;
}

int64_t RatingDesk::undo(const Rater& rater) { return store_.undo_last_label(rater.id).value_or(0); }

RaterProgress RatingDesk::progress(const Rater& rater) {
  RaterProgress p;
  p.rater = rater.name;
  std::map<int64_t, Comparison> gold;
  for (const Comparison& c : store_.comparisons())
    if (c.is_gold) gold[c.id] = c;
  for (const Label& l : store_.labels()) {
    if (l.rater_id != rater.id) continue;
    ++p.labels;
    auto g = gold.find(l.comparison_id);
    if (g != gold.end() && g->second.gold_answer.is_object() && g->second.gold_answer.contains("choice")) {
      ++p.gold_seen;
      p.gold_correct += g->second.gold_answer["choice"].get<std::string>() == choice_name(l.choice);
    }
  }
  for (const Comparison& c : store_.open_comparisons_for(rater.id)) p.remaining += !c.is_gold;
  return p;
}

}  // namespace rlhf::labels

#include "labels/user_feedback.h"

#include <algorithm>
#include <map>
#include <set>

#include "common/error.h"

namespace rlhf::labels {
namespace {

// Writes a label of `rater_id` preferring `better` over `worse` unless that
// rater already labelled the pair (a preference and a pair of thumbs on the
// same two replies say the same thing once).
std::optional<int64_t> prefer(LabelStore& store, int64_t rater_id, int64_t prompt_id, int64_t better, int64_t worse,
                              const std::string& client_id, const std::string& rationale) {
  // Stored in the order the replies were served, so "a"/"b" mean first/second.
  const std::vector<int64_t> pair = {std::min(better, worse), std::max(better, worse)};
  int64_t comparison = 0;
  if (auto added = store.add_comparison(prompt_id, pair)) {
    comparison = *added;
  } else {
    comparison = *store.comparison_with(pair);
  }
  for (const Label& l : store.labels_of_comparison(comparison)) {
    if (l.rater_id == rater_id) return std::nullopt;
  }
  const Comparison c = store.comparison(comparison);
  Label label;
  label.comparison_id = comparison;
  label.rater_id = rater_id;
  label.choice = c.candidates[0] == better ? Choice::kA : Choice::kB;
  label.rationale = rationale;
  label.shown_order = c.candidates;
  label.client_id = client_id;
  return store.add_label(label);
}

// Pairs of (up, down) thumbs by one rater on replies to one prompt.
std::vector<std::pair<int64_t, int64_t>> thumb_pairs(const std::vector<Feedback>& fb, int64_t rater_id) {
  std::vector<int64_t> up, down;
  for (const Feedback& f : fb) {
    if (f.rater_id != rater_id) continue;
    if (f.thumb > 0) up.push_back(f.candidate_id);
    if (f.thumb < 0) down.push_back(f.candidate_id);
  }
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t u : up) {
    for (int64_t d : down) out.emplace_back(u, d);
  }
  return out;
}

Json messages_json(const Prompt& p) { return p.messages; }

}  // namespace

std::vector<int64_t> log_served(LabelStore& store, const std::string& completion_id, const Json& messages,
                                const std::vector<std::string>& replies, const std::vector<bool>& finished,
                                const std::string& policy, const Json& sampling) {
  RLHF_CHECK(replies.size() == finished.size(), "one finished flag per reply");
  sql::Transaction tx(store.db());
  const int64_t prompt = store.add_prompt(messages, Json{{"source", "serve"}});
  std::vector<int64_t> ids;
  for (size_t i = 0; i < replies.size(); ++i) {
    ids.push_back(store.add_candidate(prompt, replies[i], finished[i], policy, sampling));
  }
  store.record_served(completion_id, ids);
  tx.commit();
  return ids;
}

int64_t users_rater(LabelStore& store) {
  if (auto r = store.rater_by_name("users")) return r->id;
  return store.add_rater("users", "", "users");
}

FeedbackOutcome apply_user_feedback(LabelStore& store, int64_t rater_id, const UserFeedback& f) {
  const std::vector<int64_t> served = store.served_candidates(f.completion_id);
  if (served.empty()) {
    fail(ErrorKind::kData, "no served completion '", f.completion_id,
         "' in the label store (only replies served with --log_conversations can get feedback)");
  }
  const auto n = static_cast<int>(served.size());
  if (f.index < 0 || f.index >= n) {
    fail(ErrorKind::kData, "\"index\" ", f.index, " is out of range: completion '", f.completion_id, "' has ", n,
         n == 1 ? " choice" : " choices");
  }
  if (f.preferred && (n < 2 || *f.preferred < 0 || *f.preferred >= n)) {
    fail(ErrorKind::kData, "\"preferred\" needs a completion with two or more choices (request n = 2) and an index below ",
         n, "; completion '", f.completion_id, "' has ", n);
  }
  sql::Transaction tx(store.db());
  const int64_t prompt_id = store.candidate(served[0]).prompt_id;
  FeedbackOutcome out;
  if (f.thumb != 0 || !f.comment.empty()) {
    out.feedback_id = store.set_feedback({0, served[f.index], rater_id, f.thumb, f.comment, ""});
  }
  if (f.preferred) {
    for (int i = 0; i < n; ++i) {
      if (i == *f.preferred || served[i] == served[*f.preferred]) continue;  // identical replies say nothing
      if (auto id = prefer(store, rater_id, prompt_id, served[*f.preferred], served[i],
                           "serve:" + f.completion_id + ":preferred:" + std::to_string(i), f.comment)) {
        out.label_ids.push_back(*id);
      }
    }
  }
  if (f.thumb != 0) {
    for (const auto& [up, down] : thumb_pairs(store.feedback(prompt_id), rater_id)) {
      if (auto id = prefer(store, rater_id, prompt_id, up, down,
                           "serve:thumbs:" + std::to_string(up) + ":" + std::to_string(down), "thumbs")) {
        out.label_ids.push_back(*id);
      }
    }
  }
  tx.commit();
  return out;
}

std::vector<Json> unpaired_feedback(LabelStore& store) {
  const std::vector<Feedback> all = store.feedback();
  std::map<std::pair<int64_t, int64_t>, std::vector<Feedback>> by_prompt_rater;
  std::map<int64_t, Candidate> candidates;
  for (const Feedback& f : all) {
    if (f.thumb == 0) continue;
    const Candidate c = store.candidate(f.candidate_id);
    candidates.emplace(f.candidate_id, c);
    by_prompt_rater[{c.prompt_id, f.rater_id}].push_back(f);
  }
  std::vector<Json> out;
  for (const auto& [key, fb] : by_prompt_rater) {
    std::set<int64_t> paired;
    for (const auto& [u, d] : thumb_pairs(fb, key.second)) {
      paired.insert(u);
      paired.insert(d);
    }
    const Json messages = messages_json(store.prompt(key.first));
    for (const Feedback& f : fb) {
      if (paired.count(f.candidate_id)) continue;
      out.push_back({{"prompt", messages},
                     {"completion", Json::array({{{"role", "assistant"}, {"content", candidates.at(f.candidate_id).text}}})},
                     {"label", f.thumb > 0}});
    }
  }
  return out;
}

FeedbackCounts feedback_counts(LabelStore& store) {
  FeedbackCounts c;
  const std::vector<Feedback> all = store.feedback();
  for (const Feedback& f : all) {
    c.up += f.thumb > 0;
    c.down += f.thumb < 0;
    c.comments += !f.comment.empty();
  }
  c.paired = (c.up + c.down) - unpaired_feedback(store).size();
  return c;
}

}  // namespace rlhf::labels

// The label store: one SQLite database (WAL) holding prompts, candidate
// replies (with the policy and sampling settings that wrote them),
// comparisons queued for rating, raters, and their labels (rater, time, the
// order the candidates were shown in, the choice, optional strength, margin,
// 1-7 ratings and rationale). The schema is versioned and migrated in place.
// Several processes may read and write at once; a write returns only after
// it is committed and synced.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/config.h"
#include "labels/sqlite.h"

namespace rlhf::labels {

// For a pair, A and B are the comparison's candidates in their stored order
// (not the order shown to the rater, which is recorded separately).
enum class Choice { kA, kB, kTie, kBothBad, kRanking };
const char* choice_name(Choice c);
std::optional<Choice> parse_choice(const std::string& s);

struct Rater {
  int64_t id = 0;
  std::string name;
  std::string kind;  // "human", "simulated" or "imported"
};

struct Prompt {
  int64_t id = 0;
  Json messages;  // conversation ending with the customer's turn
  Json metadata;  // facts of the case (may be null)
};

struct Candidate {
  int64_t id = 0;
  int64_t prompt_id = 0;
  std::string text;
  bool finished = true;  // ended with the end-of-turn token
  std::string policy;    // checkpoint that wrote it
  Json sampling;         // settings it was sampled with
};

struct Comparison {
  int64_t id = 0;
  int64_t prompt_id = 0;
  std::vector<int64_t> candidates;  // 2 for a pair, K for a ranking
  int required_raters = 1;
  bool is_gold = false;  // a known-answer item for measuring raters
  Json gold_answer;      // {"choice": "a"} or {"ranking": [...]}
  double priority = 0;   // open comparisons are served highest first, then oldest
  std::string selection;                 // the strategy that set the priority ("" = none, served in turn)
  std::optional<double> selection_score;  // that strategy's score for this comparison
  bool is_ranking() const { return candidates.size() > 2; }
};

struct Label {
  int64_t id = 0;
  int64_t comparison_id = 0;
  int64_t rater_id = 0;
  Choice choice = Choice::kTie;
  std::vector<int> ranking;          // rank per candidate, 1 = best, equal ranks tie (rankings)
  std::vector<int> ratings;          // optional 1-7 per candidate
  int strength = 0;                  // 0 unspecified, 1 slightly, 2 clearly better
  std::optional<double> margin;      // Bradley-Terry margin, if given
  std::string rationale;
  std::vector<int64_t> shown_order;  // candidate ids, left to right as shown
  std::string client_id;             // the rater tool's id for this label (resends are idempotent)
  std::string created_at;            // UTC, ISO 8601
  // How its comparison was chosen (active selection): the strategy and its
  // score, copied from the comparison when the label is added; "" if none.
  std::string selection;
  std::optional<double> selection_score;
};

// The place in the serving order that a selection strategy gave one comparison.
struct SelectionMark {
  int64_t comparison_id = 0;
  double priority = 0;       // higher is served sooner
  std::string strategy;      // e.g. "uncertainty", or "random" for a floor pick
  double score = 0;
};

// What a user of the served model said of one reply: a thumb (+1 up, -1
// down, 0 none) and an optional comment. One per (reply, rater); a later one
// replaces it.
struct Feedback {
  int64_t id = 0;
  int64_t candidate_id = 0;
  int64_t rater_id = 0;
  int thumb = 0;
  std::string comment;
  std::string created_at;
};

// One rater's totals, counted by the store.
struct RaterCounts {
  size_t labels = 0;
  size_t gold_seen = 0, gold_correct = 0;  // gold items with a {"choice"} answer, and those matched
};

struct ImportStats {
  size_t pairs = 0, rankings = 0, prompts = 0, candidates = 0;
  size_t already_there = 0;  // records this rater had labelled before (a rerun): skipped
  size_t disagreements = 0;  // imported labels that differ from another rater's on the same comparison
};

class LabelStore {
 public:
  // Opens or creates the store and migrates an older schema in place.
  explicit LabelStore(const std::string& path);
  const std::string& path() const { return db_.path(); }
  // For grouping several calls in one sql::Transaction.
  sql::Db& db() { return db_; }
  int schema_version();
  static int latest_schema_version();

  // Returns the existing id when the same conversation is already stored.
  int64_t add_prompt(const Json& messages, const Json& metadata);
  Prompt prompt(int64_t id);
  // Returns the existing id when the prompt already has this exact text.
  int64_t add_candidate(int64_t prompt_id, const std::string& text, bool finished, const std::string& policy,
                        const Json& sampling);
  Candidate candidate(int64_t id);
  std::vector<Candidate> candidates_of(int64_t prompt_id);
  // Queues a comparison; nullopt if the same set of candidates is queued already.
  std::optional<int64_t> add_comparison(int64_t prompt_id, const std::vector<int64_t>& candidates,
                                        int required_raters = 1, bool is_gold = false,
                                        const Json& gold_answer = nullptr);
  Comparison comparison(int64_t id);
  // The comparison of exactly these candidates, if there is one.
  std::optional<int64_t> comparison_with(const std::vector<int64_t>& candidates);
  // Sets the serving priority, strategy and score of these comparisons in
  // one transaction (others keep theirs).
  void set_selection(const std::vector<SelectionMark>& marks);
  // Makes a comparison a gold item with a known answer ({"choice": "a"}).
  void set_gold(int64_t id, const Json& answer);
  std::vector<Comparison> comparisons();
  // Regular (not gold) comparisons still short of labels, in serving order.
  std::vector<Comparison> open_comparisons();
  // Comparisons this rater has not labelled that still need raters, in
  // serving order (priority, then oldest).
  std::vector<Comparison> open_comparisons_for(int64_t rater_id, size_t limit = SIZE_MAX);

  // The rating desk's queries. Times are seconds since the Unix epoch
  // (offers are shared by processes, so by wall clock). A regular comparison
  // is available to a rater while it is short of labels, they have not
  // labelled it, and other raters' live offers leave room for them.
  std::optional<Comparison> next_available(int64_t rater_id, double now, const std::set<int64_t>& skip = {});
  // Regular comparisons short of labels that the rater has not labelled
  // (other raters' offers aside): the rater's "remaining".
  size_t count_open_for(int64_t rater_id);
  bool is_available(int64_t comparison_id, int64_t rater_id, double now);
  // Gold items the rater has not labelled (gold items go to every rater).
  std::vector<int64_t> open_gold_for(int64_t rater_id);
  // Records that the comparison was handed to the rater, held until
  // `expires_at`. A label ends the offer; offers are forgotten a day after
  // they expire.
  void offer(int64_t comparison_id, int64_t rater_id, double now, double expires_at);
  bool was_offered(int64_t comparison_id, int64_t rater_id);
  size_t label_count(int64_t comparison_id);
  bool has_labelled(int64_t comparison_id, int64_t rater_id);
  RaterCounts rater_counts(int64_t rater_id);

  // Replies served under an API completion id ("chatcmpl-..."), one per
  // choice index, so feedback can name them.
  void record_served(const std::string& completion_id, const std::vector<int64_t>& candidates);
  std::vector<int64_t> served_candidates(const std::string& completion_id);
  // Stores or replaces a rater's feedback on a reply (an empty comment keeps
  // the earlier one); returns its id.
  int64_t set_feedback(const Feedback& feedback);
  // All feedback, or that on one prompt's replies, oldest first.
  std::vector<Feedback> feedback(std::optional<int64_t> prompt_id = std::nullopt);

  int64_t add_rater(const std::string& name, const std::string& token_hash, const std::string& kind);
  // Replaces a rater's token hash ("" revokes: no token matches it). Their
  // labels stay. Fails when there is no such rater.
  void set_token_hash(const std::string& name, const std::string& token_hash);
  std::optional<Rater> rater_by_name(const std::string& name);
  std::optional<Rater> rater_by_token_hash(const std::string& token_hash);
  std::vector<Rater> raters();

  // Commits a label and returns its id. A resend with the same (rater,
  // client_id) and the same content returns the first label's id and writes
  // nothing; the same client id with other content, or a second label by the
  // same rater on the same comparison, is an error.
  int64_t add_label(Label label);
  std::optional<Label> label_by_client_id(int64_t rater_id, const std::string& client_id);
  std::vector<Label> labels();
  std::vector<Label> labels_of_comparison(int64_t comparison_id);
  // Deletes the rater's most recent label; returns its comparison id.
  std::optional<int64_t> undo_last_label(int64_t rater_id);
  size_t count_labels();

  // JSONL in the ecosystem's shapes: {"prompt","chosen","rejected"} with
  // optional "tie" and "margin", and {"prompt","responses","ranking"}.
  // Errors name the file and line. Imported labels belong to `rater_name`.
  ImportStats import_jsonl(const std::string& path, const std::string& rater_name);
  // One row per label (both-bad labels have no preference and are skipped),
  // in label order; `since_label_id` exports only newer labels.
  std::vector<Json> export_records(int64_t since_label_id = 0);
  size_t export_jsonl(const std::string& path, int64_t since_label_id = 0);

 private:
  void migrate();
  Label read_label(sql::Statement& s);
  sql::Db db_;
};

// The current time as UTC ISO 8601 ("2026-11-26T12:00:00.123Z").
std::string utc_now();

}  // namespace rlhf::labels

// The rating desk: what the label service does for a rater, without the
// network, so the server, the rater tool's local mode (--db) and tests share
// it. Hands out tasks (each comparison to its configured number of raters,
// never the same rater twice, left/right order randomised per rater, gold
// items mixed in), commits labels, undoes a rater's last label, reports a
// rater's own progress. A rater never sees another rater's labels.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "labels/store.h"

namespace rlhf::labels {

struct TaskMessage {
  std::string role, content;
};
struct TaskReply {
  int64_t candidate_id = 0;
  std::string text;
  bool finished = true;
};
// One comparison as a rater sees it: replies in the order to show them.
struct RatingTask {
  int64_t comparison_id = 0;
  std::vector<TaskMessage> conversation;
  std::vector<TaskReply> replies;
  bool ranking = false;      // order K replies instead of choosing between two
  bool ask_ratings = false;  // also a 1-7 rating per reply
  uint32_t remaining = 0;    // open tasks for this rater, this one included
};
struct RaterProgress {
  std::string rater;
  uint32_t labels = 0, remaining = 0, gold_seen = 0, gold_correct = 0;
};

struct DeskConfig {
  double gold_rate = 0.1;    // chance that the next task is a gold item (when one is open)
  bool ask_ratings = false;  // ask a 1-7 rating per reply on every task
  int lease_seconds = 600;   // a handed-out task is held for its rater this long
  int64_t seed = 0;          // seeds the per-rater left/right order and the gold draws
  int64_t max_rationale_bytes = 4096;  // longer rationales are refused (they are stored and shipped with every label)
  template <class V> void visit(V& v) {
    v("gold_rate", gold_rate, Range::between(0.0, 1.0));
    v("ask_ratings", ask_ratings);
    v("lease_seconds", lease_seconds, Range::at_least(1));
    v("seed", seed);
    v("max_rationale_bytes", max_rationale_bytes, Range::between(0, 1 << 20));
  }
};

// Limits on what a rater's request may carry.
constexpr size_t kMaxExclude = 10000;       // skipped comparisons listed in one next-task request
constexpr size_t kMaxClientIdBytes = 128;   // a label's client id

// The desk keeps no state of its own beyond its random draws: offers
// (leases) and labels live in the store, so a restarted service, the rater
// tool's local mode and a second process all see the same hand-outs.
class RatingDesk {
 public:
  RatingDesk(LabelStore& store, DeskConfig config);

  // The rater whose token this is, or nullopt.
  std::optional<Rater> authenticate(const std::string& token);
  // The next task for the rater, skipping `exclude` (tasks skipped in this
  // session); `prefer` (e.g. the comparison just undone) comes first when open.
  std::optional<RatingTask> next_task(const Rater& rater, const std::vector<int64_t>& exclude = {},
                                      int64_t prefer = 0);
  // Validates and commits; returns the label id. Only comparisons handed to
  // this rater (next_task) that still need labels may be labelled; gold
  // items always may. Everything is as the rater
  // saw it: `choice` a / b mean left / right of `shown_order`, and `ranking`
  // and `ratings` are aligned with `shown_order`. The store keeps them
  // relative to the comparison's stored candidates, with the shown order. A resend with the same
  // client id and content returns the first id; other content under that id
  // is refused. Errors (kData) say what is wrong.
  int64_t submit(const Rater& rater, Label label);
  // Removes the rater's most recent label; returns its comparison (0 if none).
  int64_t undo(const Rater& rater);
  RaterProgress progress(const Rater& rater);

 private:
  RatingTask make_task(const Comparison& c, const Rater& rater, uint32_t remaining);

  LabelStore& store_;
  DeskConfig config_;
  std::mt19937_64 rng_;
};

}  // namespace rlhf::labels

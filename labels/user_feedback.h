// Feedback from the people using a served policy (`rlhf serve`), turned into
// what the rest of the workbench trains on.
//
// - "Which reply is better" on a request with n >= 2 replies becomes a
//   comparison of those replies and a label by the user's rater.
// - Thumbs are kept per reply (the feedback table). A thumb becomes a
//   comparison only where a pair exists: a reply the same rater gave a thumb
//   up and another reply to the same conversation they gave a thumb down.
//   The rest stay unpaired: `rlhf labels export --unpaired FILE` writes them
//   as {"prompt", "completion", "label"} records, the unpaired-preference
//   shape KTO-style trainers read, and `rlhf labels stats` counts them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "labels/store.h"

namespace rlhf::labels {

// Stores a served conversation and its replies (as a prompt and candidate
// replies written by `policy`) under `completion_id`; returns the candidate
// ids in choice order.
std::vector<int64_t> log_served(LabelStore& store, const std::string& completion_id, const Json& messages,
                                const std::vector<std::string>& replies, const std::vector<bool>& finished,
                                const std::string& policy, const Json& sampling);

struct UserFeedback {
  std::string completion_id;       // the "id" of the API response
  int index = 0;                   // which choice the thumb and comment are about
  int thumb = 0;                   // +1 up, -1 down, 0 none
  std::string comment;             // free text
  std::optional<int> preferred;    // for n >= 2: the better choice's index
};

struct FeedbackOutcome {
  int64_t feedback_id = 0;        // 0 when only a preference was given
  std::vector<int64_t> label_ids;  // labels written (preference and paired thumbs)
};

// Applies feedback from `rater_id`. Errors (kData) name what is wrong: an
// unknown completion id, an index out of range, a preference without two
// replies. Saying the same thing twice writes nothing new.
FeedbackOutcome apply_user_feedback(LabelStore& store, int64_t rater_id, const UserFeedback& feedback);

// The rater that feedback without an API key belongs to ("users", kind
// "users"), created on first use.
int64_t users_rater(LabelStore& store);

// Thumbs that no pair used: {"prompt": [messages], "completion": [{"role":
// "assistant", "content"}], "label": true|false}.
std::vector<Json> unpaired_feedback(LabelStore& store);

struct FeedbackCounts {
  size_t up = 0, down = 0, comments = 0, paired = 0;
};
FeedbackCounts feedback_counts(LabelStore& store);

}  // namespace rlhf::labels

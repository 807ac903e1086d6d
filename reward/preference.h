// Preference data for reward modelling, in the shapes the RLHF ecosystem
// uses: {"prompt","chosen","rejected"} with optional "tie" and "margin", and
// K-way rankings {"prompt","responses","ranking"} which expand into all
// C(K,2) pairs, each weighted 1/C(K,2) so a ranked prompt counts as much as
// one comparison (as InstructGPT batches them).
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/chat.h"

namespace rlhf {

struct PreferencePair {
  Conversation prompt;    // ends with the customer's turn
  std::string chosen;     // the better reply (either one if tie)
  std::string rejected;
  // false: the reply was cut off at the length limit (no end-of-turn token).
  // Scored as the policy produced it; "chosen_finished"/"rejected_finished"
  // in JSONL, present only when false.
  bool chosen_finished = true, rejected_finished = true;
  bool tie = false;       // equally good: trained towards P(chosen > rejected) = 0.5
  double margin = 0;      // Bradley-Terry margin (how much better), e.g. 1.0
  double weight = 1;      // 1 for a pair, 1 / C(K,2) for a pair from a ranking
  Json metadata;          // facts of the case, if known (for gold evaluation)
  int64_t group = 0;      // index of the source record (pairs of one ranking share it)
};

// Rows as written by `rlhf labels export` or a user's JSONL file; `source`
// and `lines` name them in errors (lines may be empty).
std::vector<PreferencePair> preference_pairs(const std::vector<Json>& rows, const std::string& source,
                                             const std::vector<size_t>& lines = {});
std::vector<PreferencePair> load_preference_jsonl(const std::string& path);

// Whether the prompt is in the held-out `fraction` for this seed (by a hash
// of the conversation, so the same prompts are held out wherever asked).
bool held_out_prompt(const Conversation& prompt, double fraction, uint64_t seed);
// Splits by prompt (never one prompt on both sides): the held-out prompts
// (held_out_prompt) go to the second list.
std::pair<std::vector<PreferencePair>, std::vector<PreferencePair>> split_by_prompt(
    std::vector<PreferencePair> pairs, double fraction, uint64_t seed);

// Indices of `pairs` grouped by prompt (the same conversation), groups in
// order of first appearance. The reward model scores each distinct reply of a
// group once and trains on every labelled pair among them: K replies cost K
// forward passes for up to C(K,2) pairs (InstructGPT's batching), and no
// reply is seen more often than another within an epoch.
std::vector<std::vector<size_t>> group_by_prompt(const std::vector<PreferencePair>& pairs);

// Which of a prompt's labelled pairs a method trains on.
//  kAll: every pair as labelled.
//  kBestVsWorst: one pair per prompt, the reply with the highest win rate
//    over the pairs it appears in (a tie counts half, each pair by its
//    weight) over the one with the lowest. With K replies and all C(K,2)
//    pairs labelled, the rate pools K-1 noisy labels per reply, so the pair
//    is far more often right than one label is (binarised preference data,
//    as UltraFeedback's best-vs-worst).
//  kBestVsRest: the top reply over each reply with a lower rate, each pair
//    weighted 1/(K-1) so a prompt counts once.
// Replies are told apart by text and finished flag; earlier replies win ties
// of rate. A prompt whose replies all have one rate gives no pair.
enum class PairSelection { kAll, kBestVsWorst, kBestVsRest };
PairSelection parse_pair_selection(const std::string& name);  // "all", "best_vs_worst", "best_vs_rest"
std::vector<PreferencePair> select_pairs(const std::vector<PreferencePair>& pairs, PairSelection selection);

}  // namespace rlhf

// What the online methods (PPO, GRPO, RLOO) share: the prompt set, the
// policy with its frozen reference, the frozen reward model, sampling a
// batch of replies, the reward (model, reward function, penalties), and
// validation with best-checkpoint tracking that survives a resume.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "policy/adapt.h"
#include "policy/chat.h"
#include "policy/generate.h"
#include "policy/gpt.h"
#include "reward/reward_model.h"
#include "rollout/validation.h"
#include "train/distributed.h"
#include "train/progress.h"
#include "train/training_run.h"

namespace rlhf {

struct PromptItem {
  Conversation conversation;
  Json metadata;             // facts of the case, when the prompt has them (the gold judge reads them)
  std::vector<int32_t> ids;  // rendered with the chat template, generation prompt included
};
std::vector<PromptItem> load_prompts(const std::string& path, const ChatTemplate& chat, const std::string& system);

// The policy being trained and the frozen reference it is leashed to. With
// LoRA the reference is the policy's own base weights seen without the
// adapters (one copy in memory).
struct PolicyWithReference {
  GPT policy{nullptr}, reference{nullptr};
  Tokenizer tokenizer;  // with the chat tokens
  std::string dir;      // the resolved policy checkpoint
  std::string system_prompt;
  std::unique_ptr<LoraAdapters> lora;  // with lora.enabled
};
PolicyWithReference load_policy_with_reference(const std::string& path, const LoraConfig& lora, uint64_t seed,
                                               torch::Device device);

// A reward model for scoring: frozen, in eval mode, on `device`; an error
// unless it shares the policy's tokenizer.
LoadedRewardModel load_frozen_reward_model(const std::string& path, const PolicyWithReference& policy,
                                           torch::Device device);

// Where an online method's reward comes from: a weighted sum of the reward
// model's normalised score and the rubric (the simulated rater's gold score,
// a programmatic reward: with rubric > 0 gold is no longer an independent
// judge, and reports say so), minus penalties.
struct RewardConfig {
  double model = 1.0;           // weight of the reward model's normalised score
  double rubric = 0.0;          // weight of the rubric score (needs prompts with facts in "metadata")
  double length_penalty = 0.0;  // subtracted per reply token beyond length_target
  int length_target = 60;       // reply tokens allowed before the length penalty starts
  double missing_eos_penalty = 1.0;  // subtracted from replies cut off at the length limit (a format penalty)
  template <class V> void visit(V& v) {
    v("model", model, Range::at_least(0));
    v("rubric", rubric, Range::at_least(0));
    v("length_penalty", length_penalty, Range::at_least(0));
    v("length_target", length_target, Range::at_least(0));
    v("missing_eos_penalty", missing_eos_penalty, Range::at_least(0));
  }
  bool needs_model() const { return model > 0; }
  // "reward model", "rubric", "0.5 x reward model + 1 x rubric", for logs and reports.
  std::string describe() const;
};

// A batch of sampled replies. Queries are left-padded, replies right-padded.
struct SampledReplies {
  torch::Tensor query_ids, query_mask;        // [B, Tq]
  torch::Tensor response_ids, response_mask;  // [B, N]; mask float, 1 up to and including the stop token
  torch::Tensor finished;                     // [B] bool
  torch::Tensor lengths;                      // [B] reply tokens, the stop token included
  torch::Tensor full_ids() const { return torch::cat({query_ids, response_ids}, 1); }
  torch::Tensor full_mask() const { return torch::cat({query_mask, response_mask.to(torch::kLong)}, 1); }
};
// `k` samples of each of `prompts` (row p * k + j: sample j of prompt p;
// each prompt's KV cache is computed once), generated in chunks of about
// `generation_batch` rows; `row_seeds` has one seed per row.
SampledReplies sample_replies(GPT& policy, const std::vector<std::vector<int32_t>>& prompts, int64_t k,
                              const SamplingConfig& sampling, int generation_batch, const ChatTemplate& chat,
                              const std::vector<uint64_t>& row_seeds);

// Per-row scores of sampled replies to `items` (one per row).
struct ReplyScores {
  torch::Tensor raw;          // [B] the weighted reward before penalties
  torch::Tensor scores;       // [B] after the length and missing-EOS penalties
  std::vector<double> gold;   // rubric score per row, NaN where the prompt has no facts
};
// The rubric's (gold) score of each row, NaN where the prompt has no facts.
std::vector<double> rubric_scores(const SampledReplies& replies, const std::vector<const PromptItem*>& items,
                                  const ChatTemplate& chat);
ReplyScores score_replies(const RewardConfig& config, ScalarHeadModel* reward_model, const SampledReplies& replies,
                          const std::vector<const PromptItem*>& items, const ChatTemplate& chat);

// Online RLHF: while PPO or GRPO runs, fresh replies go to the label store as new
// comparisons for people to rate (the reward model can then be continued on
// them with `rlhf rm train --init_from RM --data.since_label ...`).
struct OnlineFeedbackConfig {
  std::string db;               // label store to push to ("" = off); the label service may be serving it
  int every = 0;                // push every N iterations (0 = off)
  int prompts = 4;              // prompts per push; two fresh replies to each make one comparison
  int required_raters = 1;      // raters each pushed comparison needs
  template <class V> void visit(V& v) {
    v("db", db);
    v("every", every, Range::at_least(0));
    v("prompts", prompts);
    v("required_raters", required_raters, Range::at_least(1));
  }
};

// Two replies of the current policy to one prompt, for rating.
struct FreshPair {
  Json conversation;  // messages, ending with the customer's turn
  Json metadata;      // facts of the case, when the prompt has them
  std::string reply_a, reply_b;
  bool finished_a = true, finished_b = true;
  int64_t iteration = 0;
};
using FreshPairsFn = std::function<void(const std::vector<FreshPair>&)>;

// Scores sampled replies: one value per row [B], replacing the configured
// reward (tests use toy rewards).
using RewardFn = std::function<torch::Tensor(const SampledReplies&)>;

// What an online run leaves.
struct OnlineResult {
  std::string checkpoint;       // final
  std::string best_checkpoint;  // best by validation
  std::vector<ValidationResult> validations;
};

// One update epoch's minibatches (PPO, GRPO): the iteration's `rows` rows
// (all ranks together) in a shuffle seeded by `shuffle_seed`, cut into
// `minibatches` equal parts; for each, this rank's rows of it, as indices
// into its own rows [row0, row0 + local_n).
std::vector<std::vector<int64_t>> local_minibatches(int rows, int minibatches, uint64_t shuffle_seed, int row0,
                                                    int local_n);

// The response tokens in some rows of a rollout's mask (0 for no rows), the
// indices moved to the mask's device.
double response_tokens(const torch::Tensor& response_mask, const std::vector<int64_t>& rows);

// Runs `step(indices)` (forward and backward) over this rank's rows of one
// minibatch, `micro_batch` rows at a time, arming `sync` so the gradient
// all-reduce rides on the last backward (at once when this rank has no
// rows), then waits for it. The indices are on `device`, the rollout's.
void for_each_micro_batch(const std::vector<int64_t>& local, int micro_batch, GradientSync& sync,
                          torch::Device device, const std::function<void(const torch::Tensor& indices)>& step);

// The final and best checkpoints of a finished run in `out_dir`.
OnlineResult online_result(const std::string& out_dir, const std::vector<ValidationResult>& validations);

// Validation every `interval` iterations, the history and the best
// objective, kept in the trainer state so a resumed run picks the same best.
class ValidationTracker {
 public:
  // Loads the prompts and the reference's replies (rank 0 only, when
  // `enabled`: a reward model and validation prompts).
  ValidationTracker(const ValidationConfig& config, const ChatTemplate& chat, const std::string& system_prompt,
                    GPT& reference, ScalarHeadModel* reward_model, bool is_main);
  bool enabled() const { return enabled_; }
  bool due(int64_t done, int64_t total) const;
  // Validates `policy` after `done` iterations (rank 0): logs a line and a
  // metrics row, writes validation.md; true when it is the best so far by
  // reward - kl_coef * KL.
  bool validate(GPT& policy, int64_t done, double kl_coef, TrainingRun& run);
  Json state() const;  // {"best_objective", "validations"}
  void restore(const Json& trainer_state);
  const std::vector<ValidationResult>& history() const { return history_; }

 private:
  const ValidationConfig& config_;
  const ChatTemplate& chat_;
  GPT reference_;
  ScalarHeadModel reward_model_{nullptr};
  bool enabled_ = false;
  std::vector<ValidationPrompt> prompts_;
  PolicyReplies reference_replies_, last_replies_;
  std::vector<ValidationResult> history_;
  double best_objective_;
};

// The end of an online iteration `done` of `total`: validation when due
// (rank 0; the others wait), then `save(best)` when it is the best so far
// or a checkpoint is due.
void validate_and_checkpoint(ValidationTracker& validation, GPT& policy, int64_t done, int64_t total, double kl_coef,
                             TrainingRun& run, PhaseTimer& times, const std::function<void(bool best)>& save);

}  // namespace rlhf

// Training and evaluating the reward model (`rlhf rm train | eval | score`).
// Bradley-Terry on preference pairs, one epoch by default, starting from the
// SFT policy's backbone (or continuing an existing reward model on new
// labels); held-out pairs are split by prompt; rewards are normalised to mean
// 0, standard deviation 1 on the SFT policy's replies.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/adapt.h"
#include "reward/preference.h"
#include "reward/reward_model.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/training_run.h"

namespace rlhf {

struct RewardDataConfig {
  std::string preferences = "runs/labels.sqlite";  // a label store (.sqlite) or JSONL of pairs/rankings
  double eval_fraction = 0.1;   // share of prompts held out for evaluation, e.g. 0.1
  int64_t since_label = 0;      // from a label store: only labels with a larger id; -1 = those newer than init_from's reward model
  template <class V> void visit(V& v) {
    v("preferences", preferences);
    v("eval_fraction", eval_fraction, Range::between(0, 0.9));
    v("since_label", since_label);
  }
};

struct RewardLoopConfig : RunSettings {
  int batch_size = 16;         // prompts per micro-batch, each with all its labelled pairs (one pair per prompt: pairs)
  int grad_accum = 1;
  double epochs = 1.0;         // passes over the training pairs (1 is standard: RMs overfit fast)
  double grad_clip = 1.0;
  double label_noise = 0.0;    // assumed share of flipped labels in the loss (0 = plain Bradley-Terry), e.g. 0.1
  int log_interval = 10;
  int eval_interval = 0;       // steps between evaluations (0 = only at the end)
  // Score each prompt once for all its replies (and each distinct held-out
  // reply once in evaluation): about half the compute with 16 replies per
  // prompt, the same scores to float rounding (docs/performance.md).
  bool share_prompts = false;
  template <class V> void visit(V& v) {
    v("batch_size", batch_size, Range::at_least(1));
    v("grad_accum", grad_accum, Range::at_least(1));
    v("epochs", epochs, Range::at_least(0));
    v("grad_clip", grad_clip, Range::at_least(0));
    v("label_noise", label_noise, Range::between(0, 0.5));
    visit_run(v);
    v("log_interval", log_interval, Range::at_least(1));
    v("eval_interval", eval_interval, Range::at_least(0));
    v("share_prompts", share_prompts);
  }
};

struct RewardTrainConfig {
  std::string out_dir = "runs/rm";
  std::string init_from = "runs/sft";  // SFT checkpoint (new head), or a reward model to continue
  RewardDataConfig data;
  RewardLoopConfig train;
  FreezeConfig freeze;                 // parameters kept as in init_from (e.g. embeddings, lower blocks)
  AdamWConfig optim = [] {
    AdamWConfig o;
    o.weight_decay = 0.0;
    return o;
  }();
  ScheduleConfig schedule = [] {
    ScheduleConfig s;
    s.lr = 3e-4;
    s.min_lr = 3e-5;
    s.warmup_steps = 10;
    s.decay = "linear";
    return s;
  }();
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("init_from", init_from);
    v.section("data", data);
    v.section("train", train);
    v.section("freeze", freeze);
    v.section("optim", optim);
    v.section("schedule", schedule);
  }
};

struct RewardEval {
  size_t pairs = 0;            // strict (non-tie) labelled pairs evaluated
  double label_accuracy = 0;   // r(chosen) > r(rejected) on those pairs
  size_t gold_pairs = 0;       // pairs whose gold scores differ
  double gold_accuracy = 0;    // the RM prefers the reply gold prefers
  double mean_margin = 0;      // mean r(chosen) - r(rejected)
  Json to_json() const;
};

struct RewardTrainResult {
  std::string checkpoint;
  RewardEval eval;
  int64_t last_label_id = 0;
};

// What one micro-batch trains on: the distinct replies of some prompts'
// labelled pairs (each scored once), and every pair as indices into them.
struct PairBatch {
  std::vector<const Conversation*> prompts;
  std::vector<const std::string*> replies;
  std::vector<bool> finished;             // per reply: ended with the end-of-turn token
  std::vector<int64_t> chosen, rejected;  // per pair: index into replies
  std::vector<float> margin, tie, weight;  // per pair
};
// `groups` are groups of indices into `pairs` (group_by_prompt).
PairBatch pair_batch(const std::vector<PreferencePair>& pairs, const std::vector<const std::vector<size_t>*>& groups);

// Rewards [R] of the batch's distinct replies, from one forward pass; with
// `share_prompts`, each prompt's tokens run once for all its replies
// (SharedPromptBatch; reward_batch where a row does not fit).
torch::Tensor pair_batch_rewards(ScalarHeadModel& model, const ChatTemplate& chat, const PairBatch& batch,
                                 torch::Device device, bool share_prompts = false);

// Bradley-Terry loss per pair [P] from the rewards of pair_batch_rewards.
torch::Tensor pair_batch_losses(const PairBatch& batch, const torch::Tensor& rewards, double label_noise = 0.0);

// `train_pairs`/`eval_pairs` come from the caller (label store or JSONL).
RewardTrainResult run_reward_training(const RewardTrainConfig& config, const std::vector<PreferencePair>& train_pairs,
                                      const std::vector<PreferencePair>& eval_pairs, int64_t last_label_id,
                                      const DistInfo& dist = {});

// `per_pair`, if given, receives one record per pair (both rewards, and the
// gold findings of both replies where the case's facts are known): what
// `rlhf rm eval --dump` writes for error analysis. `share_prompts`: each
// distinct (prompt, reply) is scored once, prompts shared (score_replies).
RewardEval evaluate_reward_model(ScalarHeadModel& model, const ChatTemplate& chat,
                                 const std::vector<PreferencePair>& pairs, int batch_size, torch::Device device,
                                 std::vector<Json>* per_pair = nullptr, bool share_prompts = false);

// Raw scores for (prompt, reply) pairs, batched, under no_grad. With
// `share_prompts`, consecutive rows of one prompt share its forward pass
// (batch_size replies per pass). `features`, if given, receives the score
// head's inputs [N, C] on the CPU, one row per reply.
std::vector<double> score_replies(ScalarHeadModel& model, const ChatTemplate& chat,
                                  const std::vector<const Conversation*>& prompts,
                                  const std::vector<const std::string*>& replies, int batch_size,
                                  torch::Device device, const std::vector<bool>& finished = {},
                                  bool share_prompts = false, torch::Tensor* features = nullptr);

}  // namespace rlhf

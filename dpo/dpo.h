// `rlhf dpo`: preference optimisation straight from labelled pairs, without a
// reward model or sampling (DPO and its variants, dpo/dpo_loss.h).
//
// The reference is the starting policy. Its log-probabilities of every
// training and held-out reply are computed once, before the first update,
// and kept in the run folder (reference_logps.safetensors): no second model
// is held while training, with or without LoRA, and a resumed run reads them
// back. Pairs come from the label store or JSONL as for the reward model
// (reward/preference.h): a K-way ranking is its C(K,2) pairs weighted
// 1/C(K,2); a tie trains towards no preference; a pair's margin is not used.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/adapt.h"
#include "policy/chat.h"
#include "policy/gpt.h"
#include "reward/preference.h"
#include "reward/rm_train.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/training_run.h"

namespace rlhf {

struct DpoObjectiveConfig {
  std::string loss_type = "sigmoid";  // sigmoid (DPO; cDPO with label_smoothing), robust, ipo or hinge
  double beta = 0.1;                  // strength of the pull towards the reference, e.g. 0.1
  double label_smoothing = 0.0;       // assumed share of flipped labels (sigmoid, robust), e.g. 0.1
  double rpo_alpha = 0.0;             // weight of the chosen reply's per-token NLL in the loss (RPO), e.g. 1.0
  template <class V> void visit(V& v) {
    v("loss_type", loss_type);
    v("beta", beta, Range::at_least(1e-6));
    v("label_smoothing", label_smoothing, Range::between(0, 0.49));
    v("rpo_alpha", rpo_alpha, Range::at_least(0));
  }
};

// The reward model's data settings plus which pairs DPO trains on.
struct DpoDataConfig : RewardDataConfig {
  // all (every labelled pair), best_vs_worst (per prompt, the reply with the
  // highest win rate over its labels against the lowest) or best_vs_rest
  // (reward/preference.h). Held-out pairs are always all of them.
  std::string pairs = "all";
  template <class V> void visit(V& v) {
    RewardDataConfig::visit(v);
    v("pairs", pairs);
  }
};

struct DpoLoopConfig : RunSettings {
  int batch_size = 8;           // pairs per micro-batch (each is two sequences), e.g. 8
  int grad_accum = 1;
  double epochs = 1.0;          // passes over the training pairs
  int64_t max_steps = 0;        // optimiser steps; 0 = from epochs
  double grad_clip = 1.0;
  int log_interval = 10;
  int eval_interval = 0;        // steps between held-out evaluations (0 = only at the end)
  template <class V> void visit(V& v) {
    v("batch_size", batch_size, Range::at_least(1));
    v("grad_accum", grad_accum, Range::at_least(1));
    v("epochs", epochs, Range::at_least(0));
    v("max_steps", max_steps, Range::at_least(0));
    v("grad_clip", grad_clip, Range::at_least(0));
    visit_run(v);
    v("log_interval", log_interval, Range::at_least(1));
    v("eval_interval", eval_interval, Range::at_least(0));
  }
};

struct DpoConfig {
  std::string out_dir = "runs/dpo";
  std::string policy = "runs/sft";  // the starting policy, also the reference
  DpoDataConfig data;               // the same labels the reward model trains on
  DpoObjectiveConfig dpo;
  DpoLoopConfig train;
  LoraConfig lora;                  // adapters instead of every weight
  AdamWConfig optim = [] {
    AdamWConfig o;
    o.weight_decay = 0.0;
    return o;
  }();
  ScheduleConfig schedule = [] {
    ScheduleConfig s;
    s.lr = 5e-5;
    s.min_lr = 5e-6;
    s.warmup_steps = 10;
    s.decay = "linear";
    return s;
  }();
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("policy", policy);
    v.section("data", data);
    v.section("dpo", dpo);
    v.section("train", train);
    v.section("lora", lora);
    v.section("optim", optim);
    v.section("schedule", schedule);
  }
};

// What users watch: the implicit rewards b (log pi - log ref) of chosen and
// rejected replies, their margin, how often chosen wins, and the policy's
// log-probs of both (chosen log-probs often fall while the margin grows).
struct DpoStats {
  double pairs = 0, loss = 0, accuracy = 0;
  double chosen_reward = 0, rejected_reward = 0, margin = 0;
  double chosen_logp = 0, rejected_logp = 0;
  Json to_json(const std::string& prefix) const;
};

struct DpoResult {
  std::string checkpoint;  // the best (lowest held-out loss) checkpoint
  DpoStats eval;           // held-out pairs at the end
};

// Names the key of a config that cannot run, before any model or label loads.
void validate_dpo_config(const DpoConfig& config);

// `train_pairs`/`eval_pairs` come from the caller (label store or JSONL);
// `data.pairs` then chooses which of the training pairs train.
DpoResult run_dpo(const DpoConfig& config, const std::vector<PreferencePair>& train_pairs,
                  const std::vector<PreferencePair>& eval_pairs, int64_t last_label_id, const DistInfo& dist = {});

// Log-probability of each reply after its prompt [N]: the sum over the
// reply's tokens and, when it finished, its end-of-turn token (or, with
// `mean`, the per-token mean). A prompt too long for the context loses its
// oldest tokens. `tokens`, if given, gets each reply's token count [N].
torch::Tensor reply_logprobs(GPT& model, const ChatTemplate& chat, const std::vector<const Conversation*>& prompts,
                             const std::vector<const std::string*>& replies, const std::vector<bool>& finished,
                             bool mean, torch::Device device, torch::Tensor* tokens = nullptr);

}  // namespace rlhf

// The critic-free online methods: GRPO (Shao et al. 2024), Dr. GRPO (Liu et
// al. 2025) and RLOO (Ahmadian et al. 2024). Each iteration samples K
// replies to each of a set of prompts (the prompt's KV cache computed once
// and shared by its K samples), scores them, and takes each reply's
// advantage from its own group's scores: no value model. The update is
// PPO's clipped ratio; the KL to the frozen SFT reference is a loss term
// (k3, as GRPO) or a penalty in the reward (as RLOO).
// `rlhf grpo --config configs/grpo.toml` (`--train.advantage=rloo` for RLOO).
#pragma once

#include <string>

#include "common/config.h"
#include "policy/adapt.h"
#include "rollout/online.h"
#include "rollout/ppo.h"
#include "rollout/validation.h"
#include "train/distributed.h"
#include "train/training_run.h"

namespace rlhf {

struct GrpoRolloutConfig {
  int prompts = 16;              // prompts per iteration, all ranks together
  int samples = 4;               // replies per prompt (the group, K >= 2)
  int generation_batch = 64;     // rows per generate() call
  double temperature = 1.0;      // pure sampling; log-probs use the same temperature
  int max_new_tokens = 80;       // reply length limit
  std::string weights = "fp32";  // sampling precision, "fp32" or "bf16" (log-probs for the update stay fp32)
  template <class V> void visit(V& v) {
    v("prompts", prompts, Range::at_least(1));
    v("samples", samples, Range::at_least(2));
    v("generation_batch", generation_batch, Range::at_least(1));
    v("temperature", temperature, Range::at_least(1e-6));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    v("weights", weights);
  }
};

struct GrpoLoopConfig : RunSettings {
  GrpoLoopConfig() {
    seed = 7;
    checkpoint_interval = 10;
  }
  int64_t iterations = 60;       // sample + update rounds
  std::string advantage = "grpo";  // "grpo" (z-score in the group), "dr_grpo" (no std division), "rloo" (leave-one-out)
  std::string loss_aggregation = "sequence";  // "sequence" (GRPO), "token" (DAPO), "constant" (Dr. GRPO)
  int epochs = 1;                // passes over each batch; 1 with one minibatch is plain policy gradient
  int minibatches = 1;           // optimizer steps per epoch (shuffled)
  int micro_batch = 16;          // rows per forward/backward inside a minibatch
  double lr = 5e-5;              // learning rate, annealed linearly to 0
  bool anneal_lr = true;
  double clip = 0.2;             // ratio clip
  double grad_clip = 1.0;
  template <class V> void visit(V& v) {
    v("iterations", iterations, Range::at_least(1));
    v("advantage", advantage);
    v("loss_aggregation", loss_aggregation);
    v("epochs", epochs, Range::at_least(1));
    v("minibatches", minibatches, Range::at_least(1));
    v("micro_batch", micro_batch, Range::at_least(1));
    v("lr", lr, Range::at_least(0));
    v("anneal_lr", anneal_lr);
    v("clip", clip, Range::at_least(0));
    v("grad_clip", grad_clip, Range::at_least(0));
    visit_run(v);
  }
};

struct GrpoKLConfig {
  std::string mode = "loss";  // "loss": coef * k3 per token in the loss (GRPO); "reward": coef * summed k1 off the score (RLOO)
  double coef = 0.05;         // beta; 0 = no reference model pass at all
  template <class V> void visit(V& v) {
    v("mode", mode);
    v("coef", coef, Range::at_least(0));
  }
};

struct GrpoConfig {
  std::string out_dir = "runs/grpo";
  std::string policy = "runs/sft";       // starting policy, also the frozen reference
  std::string reward_model = "runs/rm";  // scores replies (with reward.model > 0) and validates
  std::string prompts = "data/support/rl_prompts.jsonl";
  GrpoRolloutConfig rollout;
  RewardConfig reward;
  GrpoLoopConfig train;
  GrpoKLConfig kl;
  ValidationConfig validation;
  OnlineFeedbackConfig feedback;  // fresh pairs (two of a group's replies) to the label store
  LoraConfig lora;             // the reference is then the policy without its adapters
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("policy", policy);
    v("reward_model", reward_model);
    v("prompts", prompts);
    v.section("rollout", rollout);
    v.section("reward", reward);
    v.section("train", train);
    v.section("kl", kl);
    v.section("validation", validation);
    v.section("feedback", feedback);
    v.section("lora", lora);
  }
};

// RLOO's usual settings (Ahmadian et al. 2024): the leave-one-out baseline
// and the KL as a penalty in the reward; runs/rloo.
GrpoConfig rloo_defaults();

// Every setting checked before any model loads: an error names the key.
// `custom_reward`: run_grpo is given its reward, so none is configured.
void validate_grpo_config(const GrpoConfig& config, int world_size, bool custom_reward = false);

// `reward` replaces the configured reward (tests); `feedback` receives
// fresh reply pairs every feedback.every iterations (rank 0).
OnlineResult run_grpo(const GrpoConfig& config, const RewardFn& reward = nullptr, const DistInfo& dist = {},
                      const FreshPairsFn& feedback = nullptr);

}  // namespace rlhf

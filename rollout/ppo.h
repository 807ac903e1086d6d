// The PPO stage: fine-tune the SFT policy against the reward model, with a
// per-token KL penalty to the frozen SFT reference, a value model started
// from the reward model, GAE, and the clipped objectives. Validation on
// held-out prompts every N iterations keeps the best checkpoint.
// `rlhf ppo --config configs/ppo.toml`.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/adapt.h"
#include "policy/chat.h"
#include "policy/gpt.h"
#include "rollout/online.h"
#include "rollout/validation.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/training_run.h"

namespace rlhf {

struct PpoRolloutConfig {
  int batch_size = 64;           // rollouts (prompts) per iteration, all ranks together, e.g. 64
  int generation_batch = 64;     // rows per generate() call
  double temperature = 1.0;      // pure sampling: no top-k/top-p; log-probs use the same temperature
  int max_new_tokens = 80;       // reply length limit
  std::string weights = "fp32";  // sampling precision, "fp32" or "bf16" (log-probs for the update stay fp32)
  template <class V> void visit(V& v) {
    v("batch_size", batch_size, Range::at_least(1));
    v("generation_batch", generation_batch, Range::at_least(1));
    v("temperature", temperature, Range::at_least(0));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    v("weights", weights);
  }
};

struct PpoLoopConfig : RunSettings {
  PpoLoopConfig() {
    seed = 7;
    checkpoint_interval = 10;
  }
  int64_t iterations = 40;       // rollout + update rounds
  int ppo_epochs = 2;            // passes over each batch of rollouts
  int minibatches = 4;           // optimizer steps per epoch (shuffled)
  int micro_batch = 16;          // rows per forward/backward inside a minibatch
  double lr = 3e-5;              // policy learning rate, annealed linearly to 0
  double value_lr = 1e-4;        // value model learning rate, annealed likewise
  bool anneal_lr = true;
  double clip = 0.2;             // policy ratio clip
  double value_clip = 0.2;       // value clip around the rollout's values
  double vf_coef = 0.1;          // weight of the value loss
  double gamma = 1.0;            // discount
  double lambda = 0.95;          // GAE lambda
  bool whiten_advantages = true;
  double grad_clip = 1.0;
  template <class V> void visit(V& v) {
    v("iterations", iterations, Range::at_least(1));
    v("ppo_epochs", ppo_epochs, Range::at_least(1));
    v("minibatches", minibatches, Range::at_least(1));
    v("micro_batch", micro_batch, Range::at_least(1));
    v("lr", lr, Range::at_least(0));
    v("value_lr", value_lr, Range::at_least(0));
    v("anneal_lr", anneal_lr);
    v("clip", clip, Range::at_least(0));
    v("value_clip", value_clip, Range::at_least(0));
    v("vf_coef", vf_coef, Range::at_least(0));
    v("gamma", gamma, Range::between(0, 1));
    v("lambda", lambda, Range::between(0, 1));
    v("whiten_advantages", whiten_advantages);
    v("grad_clip", grad_clip, Range::at_least(0));
    visit_run(v);
  }
};

struct KLConfig {
  std::string estimator = "k1";  // per-token KL in the reward: "k1" or "k3"
  double coef = 0.05;            // beta, the starting KL coefficient
  bool adaptive = false;         // adapt beta towards a target KL (Ziegler et al. 2019)
  double target = 6.0;           // target KL per reply (nats) when adaptive
  double horizon = 10000;        // adaptation horizon in rollouts
  template <class V> void visit(V& v) {
    v("estimator", estimator);
    v("coef", coef, Range::at_least(0));
    v("adaptive", adaptive);
    v("target", target, Range::at_least(0));
    v("horizon", horizon, Range::at_least(1));
  }
};

struct PpoConfig {
  std::string out_dir = "runs/ppo";
  std::string policy = "runs/sft";        // starting policy, also the frozen reference
  std::string reward_model = "runs/rm";   // scores replies and initialises the value model
  std::string prompts = "data/support/rl_prompts.jsonl";
  PpoRolloutConfig rollout;
  RewardConfig reward;  // reward model, rubric, penalties
  PpoLoopConfig train;
  KLConfig kl;
  ValidationConfig validation;
  OnlineFeedbackConfig feedback;
  // LoRA on the policy and the value model. The base weights then exist
  // once: the reference is the policy without its adapters and the reward
  // model the value model's backbone without its adapters (same tensors).
  LoraConfig lora;
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

// One batch of experience: the sampled replies and what scoring them gives.
struct Rollout : SampledReplies {
  torch::Tensor logprobs, ref_logprobs, values;  // [B, N], no grad
  torch::Tensor kl;                           // [B, N] per-token KL (kl.estimator), 0 past the reply
  torch::Tensor scores;                       // [B] reward, after the missing-EOS penalty
  torch::Tensor raw_scores;                   // [B] reward before the penalty
  torch::Tensor rewards, advantages, returns;  // [B, N]
  std::vector<int64_t> prompt_index;          // into the prompt set
};

using PpoResult = OnlineResult;

// Settings that must agree with each other and with the number of ranks,
// checked before any model loads; an error names the key.
void validate_ppo_config(const PpoConfig& config, int world_size);

// `reward` overrides the reward model (the value model then starts from the
// policy's backbone).
// `feedback` receives fresh reply pairs every feedback.every iterations (rank 0).
PpoResult run_ppo(const PpoConfig& config, const RewardFn& reward = nullptr, const DistInfo& dist = {},
                  const FreshPairsFn& feedback = nullptr);

// Log-probs of the response tokens and per-token values: the forward passes
// PPO makes on [query | response]. logits/values are read at the positions
// that predict each response token.
torch::Tensor response_logprobs(GPT& model, const torch::Tensor& full_ids, const torch::Tensor& full_mask,
                                int64_t query_len, const torch::Tensor& response_ids, double temperature,
                                torch::Tensor* entropy = nullptr);

}  // namespace rlhf

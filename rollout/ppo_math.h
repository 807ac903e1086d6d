// The pieces of PPO for language models, each a free function on tensors so
// a test can check it against a hand-computed case. They follow "The N
// Implementation Details of RLHF with PPO" (Huang et al. 2024) and cleanrl's
// ppo.py; see docs/ppo.md for the list.
//
// Shapes: B = rollouts, N = response tokens. `mask` [B, N] is 1 on response
// tokens (up to and including the stop token) and 0 on padding.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace rlhf::ppo {

// Mean of x over mask; `count` overrides the denominator (e.g. the token
// count of a whole minibatch split into micro-batches).
torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask, double count = 0);
// Variance over mask (Bessel-corrected when unbiased).
torch::Tensor masked_var(const torch::Tensor& x, const torch::Tensor& mask, bool unbiased = true);
// (x - mean) / std over mask; padding stays 0 and never affects the result.
torch::Tensor masked_whiten(const torch::Tensor& x, const torch::Tensor& mask, bool shift_mean = true);

// Per-token KL estimators from log-probs of the sampled tokens
// (Schulman, "Approximating KL divergence"): k1 = log p - log q (unbiased,
// can be negative), k3 = (q/p - 1) - log(q/p) (unbiased, always >= 0).
torch::Tensor kl_k1(const torch::Tensor& logprobs, const torch::Tensor& ref_logprobs);
torch::Tensor kl_k3(const torch::Tensor& logprobs, const torch::Tensor& ref_logprobs);
torch::Tensor kl_estimate(const torch::Tensor& logprobs, const torch::Tensor& ref_logprobs, const std::string& estimator);

// Which generated tokens belong to the reply: up to and including the first
// stop token. tokens [B, N] -> mask [B, N] (float).
torch::Tensor response_mask(const torch::Tensor& tokens, const std::vector<int32_t>& stop_tokens);

// A fixed penalty subtracted from the score of replies that hit the length
// limit without a stop token (Huang et al. detail 23).
torch::Tensor apply_missing_eos_penalty(const torch::Tensor& scores, const torch::Tensor& finished, double penalty);

// Per-token rewards: -beta * kl on every response token, plus the score on
// the last response token. [B] scores, [B, N] kl and mask -> [B, N].
torch::Tensor token_rewards(const torch::Tensor& scores, const torch::Tensor& kl, const torch::Tensor& mask,
                            double beta);

// Generalised advantage estimation (Schulman et al. 2016) over the masked
// response; values and rewards past the end count as 0.
// Returns (advantages, returns = advantages + values), both masked.
std::pair<torch::Tensor, torch::Tensor> gae(const torch::Tensor& rewards, const torch::Tensor& values,
                                            const torch::Tensor& mask, double gamma, double lambda);

// PPO's clipped surrogate per token: max(-A r, -A clip(r, 1-e, 1+e)) with
// r = exp(logprobs - old_logprobs) [B, N]; advantages [B, N] or [B, 1].
// `clipped` (optional) gets where the clip was active.
torch::Tensor clipped_surrogate(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs,
                                const torch::Tensor& advantages, double clip, torch::Tensor* clipped = nullptr);

struct PolicyLoss {
  torch::Tensor loss;       // clipped surrogate, to minimise
  torch::Tensor clipfrac;   // share of tokens where the clip was active
  torch::Tensor approx_kl;  // 0.5 E[(log ratio)^2], old -> new policy
};
// PPO's clipped objective: mean over tokens of max(-A r, -A clip(r, 1-e, 1+e)).
PolicyLoss policy_loss(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs,
                       const torch::Tensor& advantages, const torch::Tensor& mask, double clip, double count = 0);

struct ValueLoss {
  torch::Tensor loss;      // 0.5 E[max((v - R)^2, (v_clipped - R)^2)]
  torch::Tensor clipfrac;
};
ValueLoss value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                     const torch::Tensor& mask, double clip, double count = 0);

// 1 - Var[returns - values] / Var[returns] over mask.
double explained_variance(const torch::Tensor& values, const torch::Tensor& returns, const torch::Tensor& mask);

// ---- Critic-free methods (GRPO, RLOO): no value model; each reply's
// advantage comes from the scores of the K replies sampled for the same
// prompt. `scores` [G * K]: group g's samples are rows g*K .. g*K + K - 1.
enum class GroupAdvantage {
  kGrpo,    // (r - mean) / (std + eps), std with Bessel's correction (Shao et al. 2024; TRL)
  kDrGrpo,  // r - mean: no division by the std (Liu et al. 2025, "Dr. GRPO")
  kRloo,    // r - mean of the other K - 1 (Ahmadian et al. 2024)
};
// "grpo", "dr_grpo" or "rloo"; anything else is an error naming them.
GroupAdvantage parse_group_advantage(const std::string& name);
// One advantage per reply [G * K]; K >= 2.
torch::Tensor group_advantages(const torch::Tensor& scores, int64_t k, GroupAdvantage type, double eps = 1e-4);

// How per-token losses [B, N] become one number:
//   "sequence" mean over each reply's tokens, then over replies (GRPO);
//   "token"    mean over all tokens of the batch (DAPO);
//   "constant" sum over tokens / (B * max_tokens) (Dr. GRPO: no length bias).
// When the batch is one micro-batch of a larger one, `total_rows` and
// `total_tokens` give the whole batch's counts, so the parts sum to its loss.
torch::Tensor aggregate_token_loss(const torch::Tensor& per_token, const torch::Tensor& mask, const std::string& mode,
                                   int64_t max_tokens, double total_rows = 0, double total_tokens = 0);
// "sequence", "token" or "constant"; anything else is an error naming them.
void check_loss_aggregation(const std::string& mode);

// The adaptive KL coefficient of Ziegler et al. 2019: beta moves towards
// the value that keeps the KL near `target`, at a rate set by `horizon`.
class KLController {
 public:
  KLController(double init, bool adaptive, double target, double horizon);
  double value() const { return value_; }
  void set_value(double v) { value_ = v; }
  // After a batch of `n_steps` rollouts whose mean KL was `kl`.
  void update(double kl, int64_t n_steps);

 private:
  double value_;
  bool adaptive_;
  double target_, horizon_;
};

}  // namespace rlhf::ppo

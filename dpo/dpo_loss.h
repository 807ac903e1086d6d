// Direct preference optimisation: losses on sequence log-probabilities of a
// chosen and a rejected reply under the policy and the frozen reference, as
// free functions on tensors (Rafailov et al. 2023 and its variants, with
// TRL's names).
//
// With h = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r)) per pair:
//   sigmoid  -(1 - e) log s(b h) - e log s(-b h)       DPO; e > 0 is cDPO (conservative: a share e of labels flipped)
//   robust   (-(1 - e) log s(b h) + e log s(-b h)) / (1 - 2e)   unbiased under flip rate e (Chowdhury et al. 2024)
//   ipo      (h - 1 / (2 b))^2                         IPO (Azar et al. 2023), on per-token mean log-probs
//   hinge    relu(1 - b h)                             SLiC
// and, with rpo_alpha > 0, alpha x the chosen reply's per-token NLL (RPO).
// A tie (the two replies equally good) trains towards no preference: the
// mean of both orders for sigmoid and robust, h^2 for ipo, |b h| for hinge.
#pragma once

#include <torch/types.h>

#include <string>

namespace rlhf {

enum class DpoLossType { kSigmoid, kRobust, kIpo, kHinge };

// "sigmoid", "robust", "ipo" or "hinge"; anything else is an error naming them.
DpoLossType parse_dpo_loss_type(const std::string& name);
// IPO compares per-token mean log-probs; the others sums.
inline bool dpo_uses_mean_logprobs(DpoLossType t) { return t == DpoLossType::kIpo; }

struct DpoTerms {
  torch::Tensor losses;            // [P]
  torch::Tensor chosen_rewards;    // [P] b (log pi(c) - log ref(c)), detached
  torch::Tensor rejected_rewards;  // [P] b (log pi(r) - log ref(r)), detached
};

// All inputs [P]; `tie` bool [P]. `label_smoothing` (e) in [0, 0.5).
DpoTerms dpo_loss(const torch::Tensor& policy_chosen, const torch::Tensor& policy_rejected,
                  const torch::Tensor& reference_chosen, const torch::Tensor& reference_rejected,
                  const torch::Tensor& tie, double beta, DpoLossType type, double label_smoothing = 0.0);

// RPO's term (Pang et al. 2024; TRL's rpo_alpha): the chosen reply's
// negative log-likelihood per token, 0 for ties, so that the chosen reply's
// probability cannot fall while the margin grows. policy_chosen [P] is a
// sum over `chosen_tokens` [P] tokens.
torch::Tensor chosen_nll(const torch::Tensor& policy_chosen, const torch::Tensor& chosen_tokens,
                         const torch::Tensor& tie);

}  // namespace rlhf

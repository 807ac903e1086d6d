#include "dpo/dpo_loss.h"

#include <torch/torch.h>

#include "common/error.h"

namespace rlhf {

DpoLossType parse_dpo_loss_type(const std::string& name) {
  if (name == "sigmoid") return DpoLossType::kSigmoid;
  if (name == "robust") return DpoLossType::kRobust;
  if (name == "ipo") return DpoLossType::kIpo;
  if (name == "hinge") return DpoLossType::kHinge;
  fail(ErrorKind::kConfig, "dpo.loss_type '", name, "' is not one of sigmoid (DPO, cDPO with label_smoothing), robust, "
       "ipo, hinge");
}

DpoTerms dpo_loss(const torch::Tensor& policy_chosen, const torch::Tensor& policy_rejected,
                  const torch::Tensor& reference_chosen, const torch::Tensor& reference_rejected,
                  const torch::Tensor& tie, double beta, DpoLossType type, double label_smoothing) {
  if (beta <= 0) fail(ErrorKind::kConfig, "dpo.beta must be positive, not ", beta);
  if (label_smoothing < 0 || label_smoothing >= 0.5) {
    fail(ErrorKind::kConfig, "dpo.label_smoothing must be in [0, 0.5), not ", label_smoothing);
  }
  const torch::Tensor chosen = policy_chosen - reference_chosen;
  const torch::Tensor rejected = policy_rejected - reference_rejected;
  const torch::Tensor h = chosen - rejected;
  const torch::Tensor bh = beta * h;
  const double e = label_smoothing;
  using torch::nn::functional::logsigmoid;
  torch::Tensor strict, even;
  switch (type) {
    case DpoLossType::kSigmoid:
      strict = -(1 - e) * logsigmoid(bh) - e * logsigmoid(-bh);
      even = -0.5 * (logsigmoid(bh) + logsigmoid(-bh));
      break;
    case DpoLossType::kRobust:
      strict = (-(1 - e) * logsigmoid(bh) + e * logsigmoid(-bh)) / (1 - 2 * e);
      even = -0.5 * (logsigmoid(bh) + logsigmoid(-bh));
      break;
    case DpoLossType::kIpo:
      strict = (h - 1 / (2 * beta)).pow(2);
      even = h.pow(2);
      break;
    case DpoLossType::kHinge:
      strict = torch::relu(1 - bh);
      even = bh.abs();
      break;
  }
  DpoTerms out;
  out.losses = torch::where(tie, even, strict);
  out.chosen_rewards = (beta * chosen).detach();
  out.rejected_rewards = (beta * rejected).detach();
  return out;
}

torch::Tensor chosen_nll(const torch::Tensor& policy_chosen, const torch::Tensor& chosen_tokens,
                         const torch::Tensor& tie) {
  const torch::Tensor nll = -policy_chosen / chosen_tokens.to(policy_chosen.dtype()).clamp_min(1);
  return torch::where(tie, torch::zeros_like(nll), nll);
}

}  // namespace rlhf

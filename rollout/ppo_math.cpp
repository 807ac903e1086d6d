#include "rollout/ppo_math.h"

#include <algorithm>

#include "common/error.h"

namespace rlhf::ppo {

torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask, double count) {
  const torch::Tensor s = (x * mask).sum();
  return count > 0 ? s / count : s / mask.sum().clamp_min(1.0);
}

torch::Tensor masked_var(const torch::Tensor& x, const torch::Tensor& mask, bool unbiased) {
  const torch::Tensor mean = masked_mean(x, mask);
  const torch::Tensor n = mask.sum();
  torch::Tensor var = masked_mean((x - mean).pow(2), mask);
  if (unbiased) var = var * n / (n - 1).clamp_min(1.0);
  return var;
}

torch::Tensor masked_whiten(const torch::Tensor& x, const torch::Tensor& mask, bool shift_mean) {
  const torch::Tensor mean = masked_mean(x, mask);
  const torch::Tensor var = masked_var(x, mask, /*unbiased=*/true);
  torch::Tensor w = (x - mean) * torch::rsqrt(var + 1e-8);
  if (!shift_mean) w = w + mean;
  return w * mask;
}

torch::Tensor kl_k1(const torch::Tensor& logprobs, const torch::Tensor& ref_logprobs) { return logprobs - ref_logprobs; }

torch::Tensor kl_k3(const torch::Tensor& logprobs, const torch::Tensor& ref_logprobs) {
  const torch::Tensor log_ratio = ref_logprobs - logprobs;  // log(q/p)
  return log_ratio.exp() - 1 - log_ratio;
}

torch::Tensor kl_estimate(const torch::Tensor& logprobs, const torch::Tensor& ref_logprobs, const std::string& estimator) {
  if (estimator == "k1") return kl_k1(logprobs, ref_logprobs);
  if (estimator == "k3") return kl_k3(logprobs, ref_logprobs);
  fail(ErrorKind::kConfig, "ppo.kl_estimator must be \"k1\" or \"k3\", not \"", estimator, "\"");
}

torch::Tensor response_mask(const torch::Tensor& tokens, const std::vector<int32_t>& stop_tokens) {
  torch::Tensor is_stop = torch::zeros_like(tokens, torch::kBool);
  for (int32_t s : stop_tokens) is_stop |= tokens == s;
  // Stops seen strictly before each position.
  torch::Tensor before = is_stop.to(torch::kLong).cumsum(1) - is_stop.to(torch::kLong);
  return (before == 0).to(torch::kFloat);
}

torch::Tensor apply_missing_eos_penalty(const torch::Tensor& scores, const torch::Tensor& finished, double penalty) {
  return scores - penalty * finished.logical_not().to(scores.dtype());
}

torch::Tensor token_rewards(const torch::Tensor& scores, const torch::Tensor& kl, const torch::Tensor& mask,
                            double beta) {
  torch::Tensor rewards = -beta * kl * mask;
  const torch::Tensor last = (mask.sum(1) - 1).clamp_min(0).to(torch::kLong);  // index of the last response token
  return rewards.scatter_add(1, last.unsqueeze(1), scores.unsqueeze(1).to(rewards.dtype()));
}

std::pair<torch::Tensor, torch::Tensor> gae(const torch::Tensor& rewards, const torch::Tensor& values,
                                            const torch::Tensor& mask, double gamma, double lambda) {
  const torch::Tensor r = rewards * mask, v = values * mask;
  const int64_t N = r.size(1);
  std::vector<torch::Tensor> adv(N);
  torch::Tensor last = torch::zeros({r.size(0)}, r.options());
  for (int64_t t = N - 1; t >= 0; --t) {
    const torch::Tensor next_v = t + 1 < N ? v.select(1, t + 1) : torch::zeros_like(last);
    const torch::Tensor delta = r.select(1, t) + gamma * next_v - v.select(1, t);
    last = delta + gamma * lambda * last;
    adv[t] = last;
  }
  const torch::Tensor advantages = torch::stack(adv, 1) * mask;
  return {advantages, (advantages + v) * mask};
}

torch::Tensor clipped_surrogate(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs,
                                const torch::Tensor& advantages, double clip, torch::Tensor* clipped_out) {
  const torch::Tensor ratio = (logprobs - old_logprobs).exp();
  const torch::Tensor unclipped = -advantages * ratio;
  const torch::Tensor clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip);
  if (clipped_out != nullptr) {
    torch::NoGradGuard no_grad;
    *clipped_out = clipped > unclipped;
  }
  return torch::max(unclipped, clipped);
}

PolicyLoss policy_loss(const torch::Tensor& logprobs, const torch::Tensor& old_logprobs,
                       const torch::Tensor& advantages, const torch::Tensor& mask, double clip, double count) {
  torch::Tensor clipped;
  PolicyLoss out;
  out.loss = masked_mean(clipped_surrogate(logprobs, old_logprobs, advantages, clip, &clipped), mask, count);
  torch::NoGradGuard no_grad;
  out.clipfrac = masked_mean(clipped.to(mask.dtype()), mask, count);
  out.approx_kl = 0.5 * masked_mean((logprobs - old_logprobs).pow(2), mask, count);
  return out;
}

ValueLoss value_loss(const torch::Tensor& values, const torch::Tensor& old_values, const torch::Tensor& returns,
                     const torch::Tensor& mask, double clip, double count) {
  const torch::Tensor clipped = old_values + (values - old_values).clamp(-clip, clip);
  const torch::Tensor a = (values - returns).pow(2), b = (clipped - returns).pow(2);
  ValueLoss out;
  out.loss = 0.5 * masked_mean(torch::max(a, b), mask, count);
  torch::NoGradGuard no_grad;
  out.clipfrac = masked_mean((b > a).to(mask.dtype()), mask, count);
  return out;
}

double explained_variance(const torch::Tensor& values, const torch::Tensor& returns, const torch::Tensor& mask) {
  torch::NoGradGuard no_grad;
  const double var_r = masked_var(returns, mask).item<double>();
  if (var_r <= 0) return 0.0;
  return 1.0 - masked_var(returns - values, mask).item<double>() / var_r;
}

KLController::KLController(double init, bool adaptive, double target, double horizon)
    : value_(init), adaptive_(adaptive), target_(target), horizon_(horizon) {}

void KLController::update(double kl, int64_t n_steps) {
  if (!adaptive_) return;
  const double error = std::clamp(kl / target_ - 1.0, -0.2, 0.2);
  value_ *= 1.0 + error * static_cast<double>(n_steps) / horizon_;
}

GroupAdvantage parse_group_advantage(const std::string& name) {
  if (name == "grpo") return GroupAdvantage::kGrpo;
  if (name == "dr_grpo") return GroupAdvantage::kDrGrpo;
  if (name == "rloo") return GroupAdvantage::kRloo;
  fail(ErrorKind::kConfig, "advantage '", name, "' is not one of grpo, dr_grpo, rloo");
}

torch::Tensor group_advantages(const torch::Tensor& scores, int64_t k, GroupAdvantage type, double eps) {
  if (k < 2) fail(ErrorKind::kConfig, "a group-relative advantage needs at least 2 samples per prompt, not ", k);
  if (scores.dim() != 1 || scores.size(0) % k != 0) {
    fail(ErrorKind::kConfig, scores.size(0), " scores do not split into groups of ", k);
  }
  const torch::Tensor groups = scores.to(torch::kFloat).view({-1, k});
  const torch::Tensor mean = groups.mean(1, /*keepdim=*/true);
  torch::Tensor adv;
  switch (type) {
    case GroupAdvantage::kGrpo: adv = (groups - mean) / (groups.std(1, /*unbiased=*/true, /*keepdim=*/true) + eps); break;
    case GroupAdvantage::kDrGrpo: adv = groups - mean; break;
    // r_i - (sum - r_i) / (K - 1) = K / (K - 1) (r_i - mean)
    case GroupAdvantage::kRloo: adv = (groups - mean) * (static_cast<double>(k) / static_cast<double>(k - 1)); break;
  }
  return adv.reshape({-1});
}

void check_loss_aggregation(const std::string& mode) {
  if (mode != "sequence" && mode != "token" && mode != "constant") {
    fail(ErrorKind::kConfig, "loss aggregation '", mode, "' is not one of sequence, token, constant");
  }
}

torch::Tensor aggregate_token_loss(const torch::Tensor& per_token, const torch::Tensor& mask, const std::string& mode,
                                   int64_t max_tokens, double total_rows, double total_tokens) {
  check_loss_aggregation(mode);
  const torch::Tensor m = mask.to(per_token.dtype());
  const double rows = total_rows > 0 ? total_rows : static_cast<double>(per_token.size(0));
  if (mode == "sequence") return ((per_token * m).sum(1) / m.sum(1).clamp_min(1)).sum() / rows;
  if (mode == "token") {
    return total_tokens > 0 ? (per_token * m).sum() / total_tokens : (per_token * m).sum() / m.sum().clamp_min(1);
  }
  if (max_tokens < 1) fail(ErrorKind::kConfig, "the constant loss aggregation needs the reply length limit");
  return (per_token * m).sum() / (rows * static_cast<double>(max_tokens));
}

}  // namespace rlhf::ppo

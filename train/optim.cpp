#include "train/optim.h"

#include <torch/nn/utils/clip_grad.h>

#include <cmath>

#include "common/error.h"

namespace rlhf {

bool default_decay(const std::string& name, const torch::Tensor& t) {
  const bool embedding = name.find("wte") != std::string::npos || name.find("wpe") != std::string::npos;
  return t.dim() >= 2 && !embedding;
}

AdamW::AdamW(std::vector<NamedParameter> params, AdamWConfig config)
    : params_(std::move(params)), config_(config) {
  for (const auto& p : params_) {
    exp_avg_.push_back(torch::zeros_like(p.tensor, torch::MemoryFormat::Contiguous));
    exp_avg_sq_.push_back(torch::zeros_like(p.tensor, torch::MemoryFormat::Contiguous));
  }
}

void AdamW::step(double lr) {
  torch::NoGradGuard no_grad;
  ++steps_;
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double bias1 = 1.0 - std::pow(b1, static_cast<double>(steps_));
  const double bias2 = 1.0 - std::pow(b2, static_cast<double>(steps_));
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i].tensor;
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    if (params_[i].decay && config_.weight_decay != 0.0) p.mul_(1.0 - lr * config_.weight_decay);
    exp_avg_[i].mul_(b1).add_(g, 1.0 - b1);
    exp_avg_sq_[i].mul_(b2).addcmul_(g, g, 1.0 - b2);
    torch::Tensor denom = (exp_avg_sq_[i].sqrt() / std::sqrt(bias2)).add_(config_.eps);
    p.addcdiv_(exp_avg_[i], denom, -lr / bias1);
  }
}

void AdamW::zero_grad() {
  for (auto& p : params_) {
    // Dropping the gradient (rather than zeroing it) saves a pass over
    // memory: the next backward writes a fresh one.
    if (p.tensor.grad().defined()) p.tensor.mutable_grad().reset();
  }
}

TensorMap AdamW::state() const {
  TensorMap out;
  for (size_t i = 0; i < params_.size(); ++i) {
    out["exp_avg/" + params_[i].name] = exp_avg_[i];
    out["exp_avg_sq/" + params_[i].name] = exp_avg_sq_[i];
  }
  out["step"] = torch::tensor({steps_}, torch::kInt64);
  return out;
}

void AdamW::load_state(const TensorMap& state, const std::string& source) {
  auto get = [&](const std::string& key, const torch::Tensor& like) {
    auto it = state.find(key);
    if (it == state.end()) {
      fail(ErrorKind::kCorrupt, source, ": optimizer state lacks '", key,
           "'. Was the model changed since this checkpoint was written?");
    }
    if (it->second.sizes() != like.sizes()) {
      fail(ErrorKind::kCorrupt, source, ": optimizer state '", key, "' has shape ",
           it->second.sizes(), " but the parameter has ", like.sizes());
    }
    return it->second;
  };
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    exp_avg_[i].copy_(get("exp_avg/" + params_[i].name, exp_avg_[i]));
    exp_avg_sq_[i].copy_(get("exp_avg_sq/" + params_[i].name, exp_avg_sq_[i]));
  }
  auto it = state.find("step");
  if (it == state.end()) fail(ErrorKind::kCorrupt, source, ": optimizer state lacks 'step'");
  steps_ = it->second.item<int64_t>();
}

double clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm) {
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) {
    if (p.tensor.grad().defined()) grads.push_back(p.tensor.grad());
  }
  if (grads.empty()) return 0.0;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> norms;
  norms.reserve(grads.size());
  for (const auto& g : grads) norms.push_back(g.norm(2).to(torch::kFloat64));
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0 && total > max_norm) {
    const double scale = max_norm / (total + 1e-6);
    for (auto& g : grads) g.mul_(scale);
  }
  return total;
}

double learning_rate(const ScheduleConfig& c, int64_t step, int64_t total_steps) {
  if (c.warmup_steps > 0 && step < c.warmup_steps) {
    return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  }
  if (c.decay == "constant" || total_steps <= c.warmup_steps) return c.lr;
  const double progress = std::min(
      1.0, static_cast<double>(step - c.warmup_steps) / static_cast<double>(total_steps - c.warmup_steps));
  if (c.decay == "linear") return c.min_lr + (c.lr - c.min_lr) * (1.0 - progress);
  if (c.decay != "cosine") {
    fail(ErrorKind::kConfig, "schedule.decay must be \"cosine\", \"linear\" or \"constant\", not \"",
         c.decay, "\"");
  }
  return c.min_lr + 0.5 * (c.lr - c.min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace rlhf

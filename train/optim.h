// AdamW with decoupled weight decay (Loshchilov & Hutter), the optimizer of
// GPT-2-style training, and the learning-rate schedule. State is a map of
// named tensors, so it saves into a checkpoint's optimizer.safetensors and a
// resumed run continues bit for bit.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "common/config.h"
#include "train/safetensors.h"

namespace rlhf {

struct AdamWConfig {
  double beta1 = 0.9;          // first-moment decay, e.g. 0.9
  double beta2 = 0.95;         // second-moment decay, e.g. 0.95 (GPT-3) or 0.999
  double eps = 1e-8;           // denominator floor
  double weight_decay = 0.1;   // applied to matrices only, e.g. 0.1
  template <class V> void visit(V& v) {
    v("beta1", beta1, Range::between(0, 0.999999));
    v("beta2", beta2, Range::between(0, 0.999999));
    v("eps", eps, Range::at_least(0));
    v("weight_decay", weight_decay, Range::at_least(0));
  }
};

struct NamedParameter {
  std::string name;
  torch::Tensor tensor;
  bool decay;  // weight decay applies (matrices); not to biases, norms, embeddings
};

// GPT-2 practice: decay 2-D weight matrices of linear layers, but not biases,
// LayerNorm parameters or embeddings.
bool default_decay(const std::string& name, const torch::Tensor& t);

class AdamW {
 public:
  AdamW(std::vector<NamedParameter> params, AdamWConfig config);

  // One update from the parameters' .grad() at learning rate `lr`.
  // Parameters without a gradient are skipped.
  void step(double lr);
  void zero_grad();
  int64_t steps() const { return steps_; }
  const std::vector<NamedParameter>& parameters() const { return params_; }

  // "exp_avg/<name>", "exp_avg_sq/<name>" and "step".
  TensorMap state() const;
  // Restores state(); names and shapes must match the parameters.
  void load_state(const TensorMap& state, const std::string& source);

 private:
  std::vector<NamedParameter> params_;
  std::vector<torch::Tensor> exp_avg_, exp_avg_sq_;
  AdamWConfig config_;
  int64_t steps_ = 0;
};

// Clips the global L2 norm of the gradients to `max_norm` (<= 0: no clipping)
// and returns the norm before clipping.
double clip_grad_norm(const std::vector<NamedParameter>& params, double max_norm);

struct ScheduleConfig {
  double lr = 6e-4;         // peak learning rate, e.g. 6e-4
  double min_lr = 6e-5;     // floor of the cosine decay, e.g. lr / 10
  int64_t warmup_steps = 100;  // linear warm-up from 0, e.g. 2% of the steps
  std::string decay = "cosine";  // "cosine", "linear" or "constant" after warm-up
  template <class V> void visit(V& v) {
    v("lr", lr, Range::at_least(0));
    v("min_lr", min_lr, Range::at_least(0));
    v("warmup_steps", warmup_steps, Range::at_least(0));
    v("decay", decay);
  }
};

// Learning rate for optimizer step `step` (0-based) of `total_steps`.
double learning_rate(const ScheduleConfig& config, int64_t step, int64_t total_steps);

}  // namespace rlhf

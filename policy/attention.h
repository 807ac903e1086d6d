// Attention kernels shared by the GPT-2 and Llama-family blocks.
#pragma once

#include <torch/types.h>

namespace rlhf {

// Additive bias for masked attention. Finite, so a row with every key masked
// (a left-padding query) gives a harmless uniform softmax instead of NaN.
constexpr double kMasked = -1e30;

// Scaled dot-product attention (scale 1/sqrt(D)). q [B,H,T,D], k/v
// [B,H,Tk,D], bias [B,1,T,Tk] additive or undefined (then causal when
// `causal`). Returns [B,H,T,D].
torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& bias, bool causal, double dropout);

// One query position against the first t cached keys (decoding), through
// kernels::attend_one_query: fp32 on the CPU. q [B,H,1,D] contiguous, caches
// [B,H,cap,D], bias [B,1,1,t]. Returns [B,H,1,D].
torch::Tensor attend_cached_query(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                                  int64_t t, const torch::Tensor& bias);

}  // namespace rlhf

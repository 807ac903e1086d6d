#include "policy/attention.h"

#include <torch/version.h>

#include <cmath>
#include <vector>

#include "policy/kernels.h"
#include "policy/parallel.h"

namespace rlhf {

torch::Tensor attend(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                     const torch::Tensor& bias, bool causal, double dropout) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(
      q, k, v, bias.defined() ? c10::optional<at::Tensor>(bias.to(q.scalar_type())) : c10::nullopt,
      dropout, causal && !bias.defined());
#else
  const int64_t B = q.size(0), H = q.size(1), T = q.size(2), D = q.size(3), Tk = k.size(2);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  torch::Tensor qf = q.reshape({B * H, T, D});
  torch::Tensor kt = k.reshape({B * H, Tk, D}).transpose(1, 2);
  torch::Tensor att;
  if (bias.defined()) {
    torch::Tensor b = bias.to(q.scalar_type()).expand({B, H, T, Tk}).reshape({B * H, T, Tk});
    att = torch::baddbmm(b, qf, kt, 1.0, scale);
  } else if (causal && T > 1) {
    // Measured faster than bmm + masked_fill_ (bench/bench_model).
    torch::Tensor mask = torch::full({T, Tk}, kMasked, q.options()).triu(Tk - T + 1);
    att = torch::baddbmm(mask, qf, kt, 1.0, scale);
  } else {
    att = torch::bmm(qf, kt).mul_(scale);
  }
  att = torch::softmax(att, -1);
  if (dropout > 0) att = torch::dropout(att, dropout, true);
  return torch::bmm(att, v.reshape({B * H, Tk, D})).view({B, H, T, D});
#endif
}

torch::Tensor attend_cached_query(const torch::Tensor& q, const torch::Tensor& k_cache, const torch::Tensor& v_cache,
                                  int64_t t, const torch::Tensor& bias) {
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), cap = k_cache.size(2);
  const torch::Tensor qc = q.contiguous(), b = bias.reshape({B, t}).to(torch::kFloat).contiguous();
  torch::Tensor out = torch::empty_like(qc);
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  const float* qp = qc.data_ptr<float>();
  const float* bp = b.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const bool bf16 = k_cache.scalar_type() == torch::kBFloat16;
  parallel_rows(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(t));
    if (bf16) {
      const auto* kp = reinterpret_cast<const uint16_t*>(k_cache.data_ptr<at::BFloat16>());
      const auto* vp = reinterpret_cast<const uint16_t*>(v_cache.data_ptr<at::BFloat16>());
      kernels::attend_one_query(qp, kp, vp, bp, op, begin, end, H, t, cap, D, scale, scratch.data());
    } else {
      kernels::attend_one_query(qp, k_cache.data_ptr<float>(), v_cache.data_ptr<float>(), bp, op, begin, end, H, t,
                                cap, D, scale, scratch.data());
    }
  });
  return out;
}

}  // namespace rlhf

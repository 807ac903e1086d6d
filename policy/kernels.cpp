// Compiled with -O3 -ffast-math (see CMakeLists.txt); no LibTorch here.
#include "policy/kernels.h"

#include <cmath>
#include <cstring>

namespace rlhf::kernels {
namespace {
constexpr float kTwoSqrt2OverPi = 1.5957691216057308f;  // 2 * sqrt(2 / pi)
constexpr float kCubic = 0.044715f;
// exp() of a larger magnitude over- or underflows; the GELU is already 0 or x.
inline float clamp80(float z) { return z < -80.0f ? -80.0f : (z > 80.0f ? 80.0f : z); }
}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default")))
void gelu_tanh_forward(const float* __restrict x, float* __restrict y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float z = clamp80(kTwoSqrt2OverPi * (v + kCubic * v * v * v));
    y[i] = v / (1.0f + std::exp(-z));
  }
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void gelu_tanh_backward(const float* __restrict g, const float* __restrict x, float* __restrict dx, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float z = clamp80(kTwoSqrt2OverPi * (v + kCubic * v * v * v));
    const float s = 1.0f / (1.0f + std::exp(-z));
    const float dz = kTwoSqrt2OverPi * (1.0f + 3.0f * kCubic * v * v);
    dx[i] = g[i] * (s + v * s * (1.0f - s) * dz);
  }
}

namespace {

inline float load(float x) { return x; }
// bfloat16 is the upper half of a float's bits.
inline float load(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <class KV>
inline void attend_one_query_impl(const float* __restrict q, const KV* __restrict k, const KV* __restrict v,
                                  const float* __restrict bias, float* __restrict out, int64_t begin, int64_t end,
                                  int64_t heads, int64_t t, int64_t cap, int64_t D, float scale,
                                  float* __restrict scratch) {
  for (int64_t r = begin; r < end; ++r) {
    const float* qr = q + r * D;
    const KV* kr = k + r * cap * D;
    const KV* vr = v + r * cap * D;
    const float* br = bias + (r / heads) * t;
    float top = -3.0e38f;
    for (int64_t j = 0; j < t; ++j) {
      const KV* kj = kr + j * D;
      float dot = 0.0f;
      for (int64_t d = 0; d < D; ++d) dot += qr[d] * load(kj[d]);
      scratch[j] = dot * scale + br[j];
      top = scratch[j] > top ? scratch[j] : top;
    }
    float total = 0.0f;
    for (int64_t j = 0; j < t; ++j) {
      scratch[j] = std::exp(scratch[j] - top);
      total += scratch[j];
    }
    float* o = out + r * D;
    for (int64_t d = 0; d < D; ++d) o[d] = 0.0f;
    for (int64_t j = 0; j < t; ++j) {
      const float p = scratch[j] / total;
      const KV* vj = vr + j * D;
      for (int64_t d = 0; d < D; ++d) o[d] += p * load(vj[d]);
    }
  }
}

}  // namespace

__attribute__((target_clones("avx512f", "avx2", "default")))
void attend_one_query(const float* __restrict q, const float* __restrict k, const float* __restrict v,
                      const float* __restrict bias, float* __restrict out, int64_t begin, int64_t end, int64_t heads,
                      int64_t t, int64_t cap, int64_t D, float scale, float* __restrict scratch) {
  attend_one_query_impl(q, k, v, bias, out, begin, end, heads, t, cap, D, scale, scratch);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void attend_one_query(const float* __restrict q, const uint16_t* __restrict k, const uint16_t* __restrict v,
                      const float* __restrict bias, float* __restrict out, int64_t begin, int64_t end, int64_t heads,
                      int64_t t, int64_t cap, int64_t D, float scale, float* __restrict scratch) {
  attend_one_query_impl(q, k, v, bias, out, begin, end, heads, t, cap, D, scale, scratch);
}

__attribute__((target_clones("avx512f", "avx2", "default")))
void sample_rows(const float* __restrict logits, int64_t stride, int64_t V, float temperature,
                 const float* __restrict uniform, int64_t* __restrict token, float* __restrict logprob, int64_t begin,
                 int64_t end, float* __restrict scratch) {
  for (int64_t r = begin; r < end; ++r) {
    const float* x = logits + r * stride;
    float top = -3.0e38f;
    for (int64_t i = 0; i < V; ++i) {
      scratch[i] = x[i] / temperature;
      top = scratch[i] > top ? scratch[i] : top;
    }
    // The total in double, as the walk below adds in double: the target is
    // then always below the walk's last sum.
    double total = 0.0;
    for (int64_t i = 0; i < V; ++i) {
      scratch[i] = std::exp(scratch[i] - top);
      total += static_cast<double>(scratch[i]);
    }
    const double target = static_cast<double>(uniform[r]) * total;
    double mass = 0.0;
    int64_t pick = V - 1;
    for (int64_t i = 0; i < V; ++i) {
      mass += static_cast<double>(scratch[i]);
      if (mass > target) {
        pick = i;
        break;
      }
    }
    token[r] = pick;
    logprob[r] = static_cast<float>(static_cast<double>(x[pick] / temperature - top) - std::log(total));
  }
}

}  // namespace rlhf::kernels

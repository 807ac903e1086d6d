// Compiled with -O3 -ffast-math (see CMakeLists.txt); no LibTorch here.
#include "policy/kernels.h"

#include <cmath>

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

}  // namespace rlhf::kernels

// Hand-written CPU kernels for the few operations where LibTorch 1.13's own
// are slow on CPU (measured in bench/bench_model: tanh-GELU ~4x slower than
// this fused form). Plain loops over float arrays, compiled with
// -O3 -ffast-math and cloned per instruction set.
#pragma once

#include <cstdint>

namespace rlhf::kernels {

// GPT-2's tanh GELU, written as x * sigmoid(2u), which equals
// 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3).
void gelu_tanh_forward(const float* x, float* y, int64_t n);
// dx = g * d/dx gelu(x).
void gelu_tanh_backward(const float* g, const float* x, float* dx, int64_t n);

}  // namespace rlhf::kernels

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

// Attention of one new query per (row, head) over its first `t` cached keys,
// for rows r in [begin, end): out[r] = softmax(q[r] . K[r]^T * scale +
// bias[r / heads]) V[r]. Decoding's shape, where batched GEMMs of one query
// row cost more in calls than in FLOPs (measured: 2.3 ms a layer at 64 rows
// x 6 heads, this kernel well under 1).
// q, out: [R, D]; k, v: [R, cap, D]; bias: [R / heads, t], additive (0 or a
// large negative number, never -inf); scratch: t floats.
void attend_one_query(const float* q, const float* k, const float* v, const float* bias, float* out,
                      int64_t begin, int64_t end, int64_t heads, int64_t t, int64_t cap, int64_t D, float scale,
                      float* scratch);
// The same over a bfloat16 KV cache (the raw 16-bit patterns), read as fp32;
// half the bytes of the fp32 cache, which bounds decoding at large batches.
void attend_one_query(const float* q, const uint16_t* k, const uint16_t* v, const float* bias, float* out,
                      int64_t begin, int64_t end, int64_t heads, int64_t t, int64_t cap, int64_t D, float scale,
                      float* scratch);

// Sampling's last step, fused: for rows r in [begin, end), draws a token from
// softmax(x / temperature), x = logits + r * stride (V values), by inverse
// CDF on uniform[r] in [0, 1) (the first token whose cumulative mass exceeds
// uniform[r] times the total), and writes it to token[r] and its
// log-probability to logprob[r]. Three passes over the row instead of the
// ten or so whole-tensor operations (scale, softmax, cumulative sum, compare,
// count, log-softmax, gather) of the general path. scratch: V floats.
void sample_rows(const float* logits, int64_t stride, int64_t V, float temperature, const float* uniform,
                 int64_t* token, float* logprob, int64_t begin, int64_t end, float* scratch);

}  // namespace rlhf::kernels

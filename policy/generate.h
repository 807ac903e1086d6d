// Batched generation with a KV cache, and per-token log-probabilities of
// given continuations (what PPO needs).
//
// Prompts of different lengths are left-padded; positions count real tokens
// only, so each row generates what it would alone. Sampling draws one uniform
// number per row per step from that row's own seed, so a row's sample does
// not depend on which other rows share the batch.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "common/config.h"
#include "policy/gpt.h"

namespace rlhf {

struct SamplingConfig {
  double temperature = 1.0;    // 0 = greedy; logits are divided by it, e.g. 0.7
  int top_k = 0;               // keep the k most likely tokens (0 = all), e.g. 50
  double top_p = 1.0;          // nucleus: smallest set with this much mass (1 = all), e.g. 0.9
  int max_new_tokens = 64;     // per row, e.g. 128
  int64_t seed = 1234;         // sampling seed; rows use mix(seed, row) unless given
  // Precision of the weights' matrix products while sampling: "fp32" (as
  // trained) or "bf16" (bfloat16 copies, several times faster GEMMs on
  // AVX512-BF16/AMX CPUs and GPUs; log-probs for training are recomputed
  // in fp32 either way).
  std::string weights = "fp32";
  template <class V> void visit(V& v) {
    v("temperature", temperature, Range::at_least(0));
    v("top_k", top_k, Range::at_least(0));
    v("top_p", top_p, Range::between(1e-9, 1));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    v("seed", seed);
    v("weights", weights);
  }
};

struct Generation {
  torch::Tensor tokens;    // [B, N] generated ids; pad_id after a row stops
  torch::Tensor lengths;   // [B] tokens generated per row, the stop token included
  torch::Tensor finished;  // [B] bool: the row ended with a stop token
  torch::Tensor logprobs;  // [B, N] log-prob of each token under logits / temperature (0 after stop)
};

// The first lengths[row] ids of tokens[row] (a generated reply, its stop
// token included), copied to the host in one go.
std::vector<int32_t> row_tokens(const torch::Tensor& tokens, const torch::Tensor& lengths, int64_t row);

// Called after each step with the new token of every row ([B]) and which
// rows were still running before it; for streaming output.
using TokenCallback = std::function<void(const torch::Tensor& tokens, const torch::Tensor& running)>;

// The dtype of a sampling weights setting; anything but "fp32" or "bf16" is
// an error naming `key`, the setting it came from.
torch::ScalarType sampling_weights_dtype(const std::string& weights, const std::string& key = "sampling.weights");
inline torch::ScalarType sampling_weights_dtype(const SamplingConfig& config) {
  return sampling_weights_dtype(config.weights);
}
// The KV cache's dtype for sampling with weights in `weights_dtype`:
// bfloat16 with bf16 weights on the CPU, where the decoding kernel reads it
// directly (at rollout batch sizes a step reads more cache than weights);
// otherwise the model's (nullopt). Llama models with grouped-query
// attention keep theirs.
c10::optional<torch::ScalarType> kv_cache_dtype(GPT& model, torch::ScalarType weights_dtype);

// Generates up to max_new_tokens after each prompt. A prompt longer than the
// context allows keeps its last tokens. `stop_tokens` end a row (the stop
// token is kept and counted). `row_seeds`, if given, has one seed per row.
Generation generate(GPT& model, const std::vector<std::vector<int32_t>>& prompts,
                    const SamplingConfig& config, const std::vector<int32_t>& stop_tokens,
                    int32_t pad_id, const std::vector<uint64_t>& row_seeds = {},
                    const TokenCallback& on_token = nullptr);

// `k` samples of each prompt (GRPO, RLOO, best-of-n): each prompt is run
// through the model once and its KV cache shared by its samples. Row
// p * k + j of the result is sample j of prompt p, the same tokens generate()
// gives for the prompts each repeated k times; `row_seeds` has one seed per
// result row.
Generation generate_samples(GPT& model, const std::vector<std::vector<int32_t>>& prompts, int64_t k,
                            const SamplingConfig& config, const std::vector<int32_t>& stop_tokens, int32_t pad_id,
                            const std::vector<uint64_t>& row_seeds = {});

// Same without a cache: the whole prefix is recomputed for every token. For
// benchmarks and tests only.
Generation generate_uncached(GPT& model, const std::vector<std::vector<int32_t>>& prompts,
                             const SamplingConfig& config, const std::vector<int32_t>& stop_tokens,
                             int32_t pad_id, const std::vector<uint64_t>& row_seeds = {});

// Prompts left-padded into one batch: ids and attention mask [B, T], T the
// longest prompt (after keeping at most the last `max_len` tokens of each).
struct PromptBatch {
  torch::Tensor ids, mask;
};
PromptBatch left_pad_prompts(const std::vector<std::vector<int32_t>>& prompts, int64_t max_len, int32_t pad_id,
                             torch::Device device);
// The longest prompt generate() keeps for this model and max_new_tokens.
int64_t prompt_budget(const GPTConfig& config, int max_new_tokens);

// Picks the next token per row from logits [B, V] with temperature, top-k and
// top-p, by inverse CDF on `uniform` [B] in [0, 1). Greedy if temperature is 0.
torch::Tensor sample_from_logits(const torch::Tensor& logits, const SamplingConfig& config,
                                 const torch::Tensor& uniform);

// The next token per row, as sample_from_logits draws it, and its
// log-probability under logits / temperature (logprobs_from_logits of it):
// {tokens [B] long, log-probs [B] float}. On the CPU, for float logits and
// sampling without top-k or top-p, one fused pass per row
// (kernels::sample_rows); elsewhere the two general functions.
std::pair<torch::Tensor, torch::Tensor> sample_with_logprobs(const torch::Tensor& logits,
                                                              const SamplingConfig& config,
                                                              const torch::Tensor& uniform);

// log softmax(logits / temperature) at `labels`: logits [B, T, V], labels
// [B, T] -> [B, T].
torch::Tensor logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& labels,
                                   double temperature = 1.0);
// Entropy of softmax(logits / temperature) per position: [B, T, V] -> [B, T].
torch::Tensor entropy_from_logits(const torch::Tensor& logits, double temperature = 1.0);

// Log-probs of input_ids[:, start:] given what precedes them, under
// logits / temperature: [B, T] -> [B, T - start]. attention_mask as in
// GPT::forward (padding anywhere).
torch::Tensor sequence_logprobs(GPT& model, const torch::Tensor& input_ids,
                                const torch::Tensor& attention_mask, int64_t start,
                                double temperature = 1.0);

}  // namespace rlhf

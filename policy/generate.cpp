#include "policy/generate.h"

#include <algorithm>
#include <optional>

#include "common/error.h"
#include "common/hash.h"
#include "policy/kernels.h"
#include "policy/parallel.h"

namespace rlhf {
namespace {

int64_t clamp_new_tokens(const GPTConfig& config, int max_new_tokens) {
  return std::max<int64_t>(1, std::min<int64_t>(max_new_tokens, config.n_positions - 1));
}

}  // namespace

int64_t prompt_budget(const GPTConfig& config, int max_new_tokens) {
  return config.n_positions - clamp_new_tokens(config, max_new_tokens);
}

PromptBatch left_pad_prompts(const std::vector<std::vector<int32_t>>& prompts, int64_t max_len, int32_t pad_id,
                             torch::Device device) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t T = 1;
  for (const auto& p : prompts) T = std::max<int64_t>(T, std::min<int64_t>(p.size(), max_len));
  torch::Tensor ids = torch::full({B, T}, pad_id, torch::kLong);
  torch::Tensor mask = torch::zeros({B, T}, torch::kLong);
  auto ia = ids.accessor<int64_t, 2>();
  auto ma = mask.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t n = std::min<int64_t>(p.size(), max_len);
    const size_t skip = p.size() - static_cast<size_t>(n);  // keep the last tokens
    for (int64_t i = 0; i < n; ++i) {
      ia[b][T - n + i] = p[skip + i];
      ma[b][T - n + i] = 1;
    }
  }
  return {ids.to(device), mask.to(device)};
}

c10::optional<torch::ScalarType> kv_cache_dtype(GPT& model, torch::ScalarType weights_dtype) {
  const GPTConfig& c = model->config();
  if (weights_dtype != torch::kBFloat16 || !model->transformer->wte->weight.device().is_cpu() ||
      c.kv_heads() != c.n_head) {
    return c10::nullopt;
  }
  return torch::kBFloat16;
}

torch::ScalarType sampling_weights_dtype(const std::string& weights, const std::string& key) {
  if (weights == "fp32") return torch::kFloat;
  if (weights == "bf16") return torch::kBFloat16;
  fail(ErrorKind::kConfig, key, " = '", weights,
       "': use \"fp32\" (as trained) or \"bf16\" (faster on CPUs with AVX512-BF16 and on GPUs)");
}

namespace {

// Low-precision copies of the weights for one sampling call, when the
// config asks for a precision other than the model's own.
std::optional<LowPrecisionWeights> sampling_precision(GPT& model, const SamplingConfig& config) {
  const torch::ScalarType dtype = sampling_weights_dtype(config);
  if (dtype == model->transformer->wte->weight.scalar_type()) return std::nullopt;
  return std::optional<LowPrecisionWeights>(std::in_place, model, dtype);
}

std::vector<SplitMix> row_rngs(size_t rows, const SamplingConfig& config,
                               const std::vector<uint64_t>& row_seeds) {
  RLHF_CHECK(row_seeds.empty() || row_seeds.size() == rows, "one seed per row");
  std::vector<SplitMix> out;
  for (size_t i = 0; i < rows; ++i) {
    out.emplace_back(row_seeds.empty() ? mix_seed({static_cast<uint64_t>(config.seed), i}) : row_seeds[i]);
  }
  return out;
}

torch::Tensor draw_uniform(std::vector<SplitMix>& rngs, torch::Device device) {
  torch::Tensor u = torch::empty({static_cast<int64_t>(rngs.size())}, torch::kFloat);
  auto a = u.accessor<float, 1>();
  for (size_t i = 0; i < rngs.size(); ++i) a[i] = static_cast<float>(rngs[i].uniform());
  return u.to(device, /*non_blocking=*/true);
}

torch::Tensor stop_mask(const torch::Tensor& tokens, const std::vector<int32_t>& stop_tokens) {
  torch::Tensor hit = torch::zeros_like(tokens, torch::kBool);
  for (int32_t s : stop_tokens) hit |= tokens == s;
  return hit;
}

// Shared decoding loop: `step_logits(tokens_so_far, new_token)` returns the
// next logits [B, V].
template <class StepFn>
Generation decode_loop(const torch::Tensor& first_logits, int64_t B, int64_t max_new,
                       const SamplingConfig& config, const std::vector<int32_t>& stop_tokens,
                       int32_t pad_id, std::vector<SplitMix>& rngs, torch::Device device,
                       const TokenCallback& on_token, StepFn&& step_logits) {
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(device);
  Generation g;
  g.tokens = torch::full({B, max_new}, pad_id, long_opts);
  g.logprobs = torch::zeros({B, max_new}, torch::TensorOptions().dtype(torch::kFloat).device(device));
  g.lengths = torch::zeros({B}, long_opts);
  torch::Tensor running = torch::ones({B}, long_opts.dtype(torch::kBool));
  torch::Tensor logits = first_logits;
  for (int64_t i = 0; i < max_new; ++i) {
    auto [next, lp] = sample_with_logprobs(logits, config, draw_uniform(rngs, device));
    next = torch::where(running, next, torch::full_like(next, pad_id));
    g.tokens.select(1, i).copy_(next);
    g.logprobs.select(1, i).copy_(lp * running);
    g.lengths += running.to(torch::kLong);
    if (on_token) on_token(next, running);
    running = running & stop_mask(next, stop_tokens).logical_not();
    // One host sync every few steps, not every token.
    if (i + 1 == max_new || ((i + 1) % 8 == 0 && !running.any().item<bool>())) break;
    logits = step_logits(next, running);
  }
  g.finished = stop_mask(g.tokens, stop_tokens).any(1);
  return g;
}

}  // namespace

torch::Tensor sample_from_logits(const torch::Tensor& logits, const SamplingConfig& config,
                                 const torch::Tensor& uniform) {
  if (config.temperature <= 0) return logits.argmax(-1);
  torch::Tensor scaled = logits.to(torch::kFloat) / config.temperature;
  const int64_t V = scaled.size(-1);
  if (config.top_k > 0 && config.top_k < V) {
    torch::Tensor kth = std::get<0>(scaled.topk(config.top_k, -1)).narrow(-1, config.top_k - 1, 1);
    scaled = scaled.masked_fill(scaled < kth, -std::numeric_limits<float>::infinity());
  }
  if (config.top_p < 1.0) {
    auto [sorted, order] = scaled.sort(-1, /*descending=*/true);
    torch::Tensor probs = torch::softmax(sorted, -1);
    // Drop a token when the mass before it already reaches top_p; the most
    // likely token always stays.
    torch::Tensor before = probs.cumsum(-1) - probs;
    torch::Tensor drop_sorted = before >= config.top_p;
    torch::Tensor drop = torch::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
    scaled = scaled.masked_fill(drop, -std::numeric_limits<float>::infinity());
  }
  torch::Tensor probs = torch::softmax(scaled, -1);
  torch::Tensor cdf = probs.cumsum(-1);
  torch::Tensor target = (uniform.to(cdf.dtype()) * cdf.select(-1, V - 1)).unsqueeze(-1);
  // First index whose cumulative mass exceeds the target (masked tokens add
  // no mass, so they are never chosen).
  return (cdf <= target).sum(-1).clamp_max(V - 1);
}

std::pair<torch::Tensor, torch::Tensor> sample_with_logprobs(const torch::Tensor& logits,
                                                              const SamplingConfig& config,
                                                              const torch::Tensor& uniform) {
  const bool fused = config.temperature > 0 && config.top_k == 0 && config.top_p >= 1.0 && logits.dim() == 2 &&
                     logits.device().is_cpu() && logits.scalar_type() == torch::kFloat && logits.stride(1) == 1;
  if (!fused) {
    torch::Tensor next = sample_from_logits(logits, config, uniform);
    const double t = config.temperature > 0 ? config.temperature : 1.0;
    return {next, logprobs_from_logits(logits, next, t)};
  }
  const int64_t B = logits.size(0), V = logits.size(1), stride = logits.stride(0);
  const torch::Tensor u = uniform.to(torch::kCPU, torch::kFloat).contiguous();
  torch::Tensor next = torch::empty({B}, torch::kLong);
  torch::Tensor lp = torch::empty({B}, torch::kFloat);
  const float* x = logits.data_ptr<float>();
  const float* up = u.data_ptr<float>();
  int64_t* np = next.data_ptr<int64_t>();
  float* lpp = lp.data_ptr<float>();
  const float temperature = static_cast<float>(config.temperature);
  parallel_rows(0, B, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(V));
    kernels::sample_rows(x, stride, V, temperature, up, np, lpp, begin, end, scratch.data());
  });
  return {next, lp};
}

torch::Tensor logprobs_from_logits(const torch::Tensor& logits, const torch::Tensor& labels,
                                   double temperature) {
  torch::Tensor lp = torch::log_softmax(logits.to(torch::kFloat) / temperature, -1);
  return lp.gather(-1, labels.unsqueeze(-1)).squeeze(-1);
}

torch::Tensor entropy_from_logits(const torch::Tensor& logits, double temperature) {
  torch::Tensor lp = torch::log_softmax(logits.to(torch::kFloat) / temperature, -1);
  return -(lp.exp() * lp).sum(-1);
}

torch::Tensor sequence_logprobs(GPT& model, const torch::Tensor& input_ids,
                                const torch::Tensor& attention_mask, int64_t start,
                                double temperature) {
  RLHF_CHECK(start >= 1 && start < input_ids.size(1), "continuation start ", start);
  torch::Tensor logits = model->forward(input_ids, attention_mask);
  const int64_t n = input_ids.size(1) - start;
  return logprobs_from_logits(logits.narrow(1, start - 1, n), input_ids.narrow(1, start, n), temperature);
}

namespace {

// generate() with each prompt's cache repeated for `k` samples.
Generation generate_cached(GPT& model, const std::vector<std::vector<int32_t>>& prompts, int64_t k,
                           const SamplingConfig& config, const std::vector<int32_t>& stop_tokens, int32_t pad_id,
                           const std::vector<uint64_t>& row_seeds, const TokenCallback& on_token) {
  RLHF_CHECK(!prompts.empty(), "generate() needs at least one prompt");
  RLHF_CHECK(k >= 1, "generate_samples() needs at least one sample per prompt");
  torch::NoGradGuard no_grad;
  const auto low_precision = sampling_precision(model, config);
  const bool was_training = model->is_training();
  model->eval();
  const torch::Device device = model->transformer->wte->weight.device();
  const int64_t max_new = clamp_new_tokens(model->config(), config.max_new_tokens);
  PromptBatch batch = left_pad_prompts(prompts, prompt_budget(model->config(), config.max_new_tokens), pad_id, device);
  const int64_t P = batch.ids.size(0), T = batch.ids.size(1), B = P * k;
  std::vector<SplitMix> rngs = row_rngs(static_cast<size_t>(B), config, row_seeds);

  KVCache cache = model->make_cache(P, T + max_new, kv_cache_dtype(model, sampling_weights_dtype(config)));
  torch::Tensor logits = model->forward(batch.ids, batch.mask, &cache).select(1, T - 1);
  if (k > 1) {
    cache.repeat_rows(k);
    logits = logits.repeat_interleave(k, 0);
  }
  Generation g = decode_loop(logits, B, max_new, config, stop_tokens, pad_id, rngs, device, on_token,
                             [&](const torch::Tensor& next, const torch::Tensor& running) {
                               return model->forward(next.unsqueeze(1), running.to(torch::kLong).unsqueeze(1), &cache)
                                   .select(1, 0);
                             });
  model->train(was_training);
  return g;
}

}  // namespace

Generation generate(GPT& model, const std::vector<std::vector<int32_t>>& prompts,
                    const SamplingConfig& config, const std::vector<int32_t>& stop_tokens,
                    int32_t pad_id, const std::vector<uint64_t>& row_seeds,
                    const TokenCallback& on_token) {
  return generate_cached(model, prompts, 1, config, stop_tokens, pad_id, row_seeds, on_token);
}

Generation generate_samples(GPT& model, const std::vector<std::vector<int32_t>>& prompts, int64_t k,
                            const SamplingConfig& config, const std::vector<int32_t>& stop_tokens, int32_t pad_id,
                            const std::vector<uint64_t>& row_seeds) {
  return generate_cached(model, prompts, k, config, stop_tokens, pad_id, row_seeds, nullptr);
}

Generation generate_uncached(GPT& model, const std::vector<std::vector<int32_t>>& prompts,
                             const SamplingConfig& config, const std::vector<int32_t>& stop_tokens,
                             int32_t pad_id, const std::vector<uint64_t>& row_seeds) {
  torch::NoGradGuard no_grad;
  const auto low_precision = sampling_precision(model, config);
  const bool was_training = model->is_training();
  model->eval();
  const torch::Device device = model->transformer->wte->weight.device();
  const int64_t max_new = clamp_new_tokens(model->config(), config.max_new_tokens);
  PromptBatch batch = left_pad_prompts(prompts, prompt_budget(model->config(), config.max_new_tokens), pad_id, device);
  std::vector<SplitMix> rngs = row_rngs(prompts.size(), config, row_seeds);
  torch::Tensor ids = batch.ids, mask = batch.mask;
  torch::Tensor logits = model->forward(ids, mask).select(1, ids.size(1) - 1);
  Generation g = decode_loop(logits, ids.size(0), max_new, config, stop_tokens, pad_id, rngs, device, nullptr,
                             [&](const torch::Tensor& next, const torch::Tensor& running) {
                               ids = torch::cat({ids, next.unsqueeze(1)}, 1);
                               mask = torch::cat({mask, running.to(torch::kLong).unsqueeze(1)}, 1);
                               return model->forward(ids, mask).select(1, ids.size(1) - 1);
                             });
  model->train(was_training);
  return g;
}

std::vector<int32_t> row_tokens(const torch::Tensor& tokens, const torch::Tensor& lengths, int64_t row) {
  const int64_t n = lengths[row].item<int64_t>();
  const torch::Tensor ids = tokens[row].narrow(0, 0, n).to(torch::kCPU, torch::kInt).contiguous();
  return std::vector<int32_t>(ids.data_ptr<int32_t>(), ids.data_ptr<int32_t>() + n);
}

}  // namespace rlhf

// Benchmark: training throughput and model FLOPs utilisation (MFU), and
// generation speed with and without the KV cache, measured in one run so
// the ratios compare like with like on a shared machine.
//
//   build/bench/bench_model [--threads N] [--steps N] [--gen-tokens N]
//
// Model: 6 layers, 6 heads, 384 wide, 256 context (the reference
// size), vocabulary 4096 (the default pretraining tokenizer). MFU counts
// (6N + 6 L C T) FLOPs per token, N = non-embedding parameters + the tied
// LM head, over the fp32 GEMM rate measured here (2048^3 matmuls).
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/runtime.h"
#include "policy/generate.h"
#include "policy/gpt.h"
#include "pretrain/pretrain.h"
#include "train/optim.h"
#include "train/runtime.h"

using namespace rlhf;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

static double gemm_gflops(int n, int reps) {
  torch::Tensor a = torch::randn({n, n}), b = torch::randn({n, n});
  torch::Tensor c = torch::mm(a, b);
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) c = torch::mm(a, b);
    best = std::max(best, 2.0 * n * n * n * reps / since(t0) / 1e9);
  }
  return best;
}

int main(int argc, char** argv) {
  ensure_blas_environment(argc, argv);
  int threads = 0, steps = 8, gen_tokens = 256, batch = 16, gen_batch = 8;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--gen-tokens")) gen_tokens = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
  }
  threads = set_torch_threads(threads);
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  std::printf("threads %d, OPENBLAS_CORETYPE=%s, LibTorch %s\n", threads, core ? core : "(auto)", TORCH_VERSION);

  const double gemm = gemm_gflops(2048, 5);
  std::printf("fp32 GEMM (2048^3): %.1f GFLOP/s\n", gemm);

  GPTConfig cfg;
  cfg.vocab_size = 4096;
  cfg.n_layer = 6;
  cfg.n_head = 6;
  cfg.n_embd = 384;
  cfg.n_positions = 256;
  GPT model(cfg);
  init_gpt_weights(*model, cfg, 1);
  std::vector<NamedParameter> params;
  for (auto& [name, p] : named_parameters(*model)) params.push_back({name, p, default_decay(name, p)});
  AdamW opt(params, AdamWConfig());
  const int64_t T = cfg.n_positions;
  torch::Tensor x = torch::randint(cfg.vocab_size, {batch, T});
  torch::Tensor y = torch::randint(cfg.vocab_size, {batch, T});
  auto train_step = [&] {
    torch::Tensor loss = next_token_loss(model->forward(x), y);
    loss.backward();
    clip_grad_norm(params, 1.0);
    opt.step(1e-4);
    opt.zero_grad();
  };
  train_step();  // warm-up
  auto t0 = Clock::now();
  for (int s = 0; s < steps; ++s) train_step();
  const double secs = since(t0);
  const double tok_s = static_cast<double>(batch) * T * steps / secs;
  const double flops_per_token = 6.0 * cfg.num_parameters() + 6.0 * cfg.n_layer * cfg.n_embd * T;
  const double achieved = tok_s * flops_per_token / 1e9;
  std::printf("training: batch %d x %lld tokens, %.0f tokens/s, %.1f GFLOP/s model, MFU %.1f%% of measured GEMM\n",
              batch, static_cast<long long>(T), tok_s, achieved, 100.0 * achieved / gemm);

  // Generation: gen_batch prompts of 8 tokens, gen_tokens new tokens each.
  std::vector<std::vector<int32_t>> prompts(gen_batch, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8});
  SamplingConfig sc;
  sc.temperature = 1.0;
  sc.max_new_tokens = std::min<int>(gen_tokens, static_cast<int>(T) - 8);
  generate(model, prompts, sc, {}, 0);  // warm-up
  t0 = Clock::now();
  Generation g = generate(model, prompts, sc, {}, 0);
  const double cached = g.lengths.sum().item<double>() / since(t0);
  t0 = Clock::now();
  Generation u = generate_uncached(model, prompts, sc, {}, 0);
  const double uncached = u.lengths.sum().item<double>() / since(t0);
  std::printf("generation (%d rows x %d new tokens): KV cache %.0f tokens/s, full recompute %.0f tokens/s, speed-up %.1fx\n",
              gen_batch, sc.max_new_tokens, cached, uncached, cached / uncached);
  return 0;
}

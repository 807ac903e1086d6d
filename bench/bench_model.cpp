// Benchmark: training throughput and model FLOPs utilisation (MFU), and
// decoding speed at rollout batch sizes against the two bounds measured in
// the same run, so the ratios compare like with like on a shared machine.
//
//   build/bench/bench_model [--threads N] [--steps N] [--batch N] [--gen-tokens N] [--gemm-only 1] [--bf16 0|1]
//                           [--device cpu|cuda] [--model reference|gpt2]
//
// Model: "reference": 6 layers, 6 heads, 384 wide, 256 context (the issue's
// reference size), vocabulary 4096 (the default pretraining tokenizer);
// "gpt2": GPT-2's 124M (12 layers, 12 heads, 768 wide, 1024 context,
// vocabulary 50257).
// - GEMM reference: the best fp32 rate this process reaches on square
//   matmuls of 1024, 2048 and 3072 (with the allocation settings printed);
//   on CUDA 4096 and 8192, and the bf16 rate beside it, against which the
//   bf16 lines are measured.
// - Training MFU: (6N + 6 L C T) FLOPs per token, N = non-embedding
//   parameters + the tied LM head, over the GEMM reference.
// - Decoding bounds, per generated token at mean context t:
//     GEMM bound   = GEMM rate / (2N + 4 L C t)           [tokens/s]
//     memory bound = B * bandwidth / (W + B * 2 L C t * 4) [tokens/s]
//   with W the bytes of weights read once per step for all B rows, the KV
//   cache read per row, and bandwidth the read rate of a 256 MB tensor.
//   The lower of the two is the best a decode step can do here.
// - Decoding with bf16 sampling (SamplingConfig::weights = "bf16": bf16
//   weights and, on the CPU, a bf16 KV cache): the same bounds with the bf16
//   GEMM rate and 2 bytes per weight and per cached value, and the fp32
//   bound beside it.
// - Training with bf16 GEMMs (train.precision = "bf16"): tokens/s beside
//   fp32's, same steps.
// - Decoding at 64 rows through the general sampling path (whole-tensor
//   operations) instead of the fused kernel, runs alternated, for the
//   kernel's gain.
// - The bf16 lines run where the CPU multiplies bf16 natively (--bf16 0|1
//   overrides).
// - K samples per prompt: one prompt pass shared by the K samples against
//   the prompt repeated K times.
#include <torch/cuda.h>
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

static torch::Device g_device = torch::kCPU;

// Waits for the device's queued work, so that a clock read after it times
// the work (CUDA kernels run asynchronously).
static void wait_for_device() {
  if (g_device.is_cuda()) torch::cuda::synchronize();
}

static double since(Clock::time_point t) {
  wait_for_device();
  return std::chrono::duration<double>(Clock::now() - t).count();
}

static double gemm_gflops(int n, int reps, torch::ScalarType dtype = torch::kFloat) {
  torch::Tensor a = torch::randn({n, n}, g_device).to(dtype), b = torch::randn({n, n}, g_device).to(dtype);
  torch::Tensor c = torch::mm(a, b);
  double best = 0;
  for (int r = 0; r < 3; ++r) {
    wait_for_device();
    auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) c = torch::mm(a, b);
    best = std::max(best, 2.0 * n * n * n * reps / since(t0) / 1e9);
  }
  return best;
}

// Read bandwidth: the best of several sums over a 256 MB fp32 tensor (2 GB
// on a GPU, whose caches hold 256 MB).
static double read_gbytes_per_s() {
  torch::Tensor x = torch::rand({(g_device.is_cuda() ? 512 : 64) << 20}, g_device);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    wait_for_device();
    auto t0 = Clock::now();
    const float s = x.sum().item<float>();
    (void)s;
    best = std::max(best, x.numel() * 4.0 / since(t0) / 1e9);
  }
  return best;
}

int main(int argc, char** argv) {
  ensure_process_environment(argc, argv);
  int threads = 0, steps = 8, gen_tokens = 256, batch = 16, gemm_only = 0, bf16 = -1;
  std::string device = "cpu", model_name = "reference";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--device")) device = argv[i + 1];
    else if (!std::strcmp(argv[i], "--model")) model_name = argv[i + 1];
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--gen-tokens")) gen_tokens = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--gemm-only")) gemm_only = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--bf16")) bf16 = std::atoi(argv[i + 1]);
  }
  if (model_name != "reference" && model_name != "gpt2") {
    std::fprintf(stderr, "--model %s: use reference (6 layers, 384 wide) or gpt2 (124M)\n", model_name.c_str());
    return 2;
  }
  try {
    g_device = parse_device(device);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "--device %s: %s\n", device.c_str(), e.what());
    return 2;
  }
  const bool cuda = g_device.is_cuda();
  threads = set_torch_threads(threads);
  std::printf("threads %d, LibTorch %s (BLAS %s), %s, device %s\n", threads, TORCH_VERSION, torch_blas().c_str(),
              process_environment_summary().c_str(), g_device.str().c_str());

  // The reference GEMM rate, and on a GPU the bf16 rate the bf16 lines are
  // measured against.
  double gemm = 0, gemm_bf16 = 0;
  const std::vector<int> sizes = cuda ? std::vector<int>{4096, 8192} : std::vector<int>{1024, 2048, 3072};
  for (int n : sizes) {
    const double g = gemm_gflops(n, cuda ? 20 : n >= 3072 ? 2 : 5);
    std::printf("fp32 GEMM %d^3: %.1f GFLOP/s\n", n, g);
    gemm = std::max(gemm, g);
    if (cuda) {
      const double h = gemm_gflops(n, 20, torch::kBFloat16);
      std::printf("bf16 GEMM %d^3: %.1f GFLOP/s\n", n, h);
      gemm_bf16 = std::max(gemm_bf16, h);
    }
  }
  const double bandwidth = read_gbytes_per_s();
  std::printf("GEMM reference (best of the above): %.1f GFLOP/s; memory read bandwidth: %.1f GB/s\n", gemm, bandwidth);
  if (cuda) std::printf("bf16 GEMM reference: %.1f GFLOP/s\n", gemm_bf16);
  if (gemm_only) return 0;

  GPTConfig cfg;
  if (model_name == "gpt2") {
    cfg.vocab_size = 50257;
    cfg.n_layer = 12;
    cfg.n_head = 12;
    cfg.n_embd = 768;
    cfg.n_positions = 1024;
  } else {
    cfg.vocab_size = 4096;
    cfg.n_layer = 6;
    cfg.n_head = 6;
    cfg.n_embd = 384;
    cfg.n_positions = 256;
  }
  GPT model(cfg);
  init_gpt_weights(*model, cfg, 1);
  model->to(g_device);
  std::vector<NamedParameter> params;
  for (auto& [name, p] : named_parameters(*model)) params.push_back({name, p, default_decay(name, p)});
  AdamW opt(params, AdamWConfig());
  const int64_t T = cfg.n_positions;
  torch::Tensor x = torch::randint(cfg.vocab_size, {batch, T}, torch::TensorOptions(torch::kLong).device(g_device));
  torch::Tensor y = torch::randint(cfg.vocab_size, {batch, T}, torch::TensorOptions(torch::kLong).device(g_device));
  auto train_step = [&] {
    torch::Tensor loss = next_token_loss(model->forward(x), y);
    loss.backward();
    clip_grad_norm(params, 1.0);
    opt.step(1e-4);
    opt.zero_grad();
  };
  auto training_rate = [&] {
    train_step();  // warm-up
    auto t0 = Clock::now();
    for (int s = 0; s < steps; ++s) train_step();
    return static_cast<double>(batch) * T * steps / since(t0);
  };
  const double tok_s = training_rate();
  const double N = static_cast<double>(cfg.num_parameters());
  const double flops_per_token = 6.0 * N + 6.0 * cfg.n_layer * cfg.n_embd * T;
  const double achieved = tok_s * flops_per_token / 1e9;
  std::printf("training: batch %d x %lld tokens, %.0f tokens/s, %.1f GFLOP/s model, MFU %.1f%% of the GEMM reference\n",
              batch, static_cast<long long>(T), tok_s, achieved, 100.0 * achieved / gemm);
  // Mixed precision (train.precision = "bf16"): the same steps with bf16
  // GEMMs, fp32 weights and optimiser. Where the CPU has no native bf16 the
  // products are emulated (measured on an AVX2 EPYC: 39 tokens/s, 0.03x
  // fp32, some twenty minutes for this and the bf16 decoding below), so the
  // bf16 lines are skipped unless --bf16 1 asks for them.
  const bool run_bf16 = bf16 < 0 ? cuda || cpu_has_native_bf16() : bf16 == 1;
  if (run_bf16) {
    set_compute_dtype(*model, torch::kBFloat16);
    const double bf16_tok_s = training_rate();
    set_compute_dtype(*model, c10::nullopt);
    std::printf("training with bf16 GEMMs (train.precision = \"bf16\"): %.0f tokens/s, %.2fx fp32, %.1f GFLOP/s model",
                bf16_tok_s, bf16_tok_s / tok_s, bf16_tok_s * flops_per_token / 1e9);
    if (cuda) std::printf(", MFU %.1f%% of the bf16 GEMM reference", 100.0 * bf16_tok_s * flops_per_token / 1e9 / gemm_bf16);
    std::printf("\n");
  } else {
    std::printf("bf16 lines skipped: this CPU has no native bf16 (AVX512-BF16), where bf16 is emulated; --bf16 1 runs them\n");
  }

  // Decoding: B prompts of 8 tokens, gen_tokens new tokens each, no stop
  // token, so every row runs to the end.
  const int new_tokens = std::min<int>(gen_tokens, static_cast<int>(T) - 8);
  const double L = cfg.n_layer, C = cfg.n_embd, t_mean = 8 + new_tokens / 2.0;
  const double kv_row_values = 2.0 * L * C * t_mean;
  SamplingConfig sc;
  sc.temperature = 1.0;
  sc.max_new_tokens = new_tokens;
  auto decode_once = [&](int rows, const SamplingConfig& config) {
    std::vector<std::vector<int32_t>> prompts(rows, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8});
    const auto start = Clock::now();
    Generation g = generate(model, prompts, config, {}, 0);
    return g.lengths.sum().item<double>() / since(start);
  };
  // Best tokens/s of two timed runs after a warm-up.
  auto decode_rate = [&](int rows, const SamplingConfig& config) {
    decode_once(rows, config);
    return std::max(decode_once(rows, config), decode_once(rows, config));
  };
  // The bounds for weights and cached keys/values of `bytes` each, the
  // weights multiplied at `rate` GFLOP/s.
  auto lower_bound = [&](int rows, double rate, double bytes, double* gemm_bound, double* memory_bound) {
    *gemm_bound = rate * 1e9 / (2.0 * N + 4.0 * L * C * t_mean);
    *memory_bound = rows * bandwidth * 1e9 / (bytes * N + rows * kv_row_values * bytes);
    return std::min(*gemm_bound, *memory_bound);
  };
  // 64 rows through the fused sampling kernel (sample_with_logprobs) and
  // through the general path (whole-tensor softmax, cumulative sum and
  // log-softmax; top_k = V keeps every token, so the draws are the same),
  // runs alternated so that a shared host's drift falls on both: the best
  // of three each, after a warm-up of each.
  // On a GPU both paths are the same (the fused kernel is the CPU's), so the
  // comparison is skipped there and 256 rows are measured as well.
  const std::vector<int> row_counts = cuda ? std::vector<int>{8, 64, 256} : std::vector<int>{8, 64};
  double fused64 = 0, general64 = 0;
  SamplingConfig general = sc;
  general.top_k = static_cast<int>(cfg.vocab_size);
  if (!cuda) {
    decode_once(64, sc);
    decode_once(64, general);
    for (int r = 0; r < 3; ++r) {
      fused64 = std::max(fused64, decode_once(64, sc));
      general64 = std::max(general64, decode_once(64, general));
    }
  }
  double fp32_bound64 = 0;
  for (int rows : row_counts) {
    const double rate = rows == 64 && !cuda ? fused64 : decode_rate(rows, sc);
    double gemm_bound = 0, memory_bound = 0;
    const double bound = lower_bound(rows, gemm, 4.0, &gemm_bound, &memory_bound);
    if (rows == 64) fp32_bound64 = bound;
    std::printf("decode %2d rows x %d new tokens: %.0f tokens/s; GEMM bound %.0f, memory bound %.0f: %.1f%% of the lower\n",
                rows, new_tokens, rate, gemm_bound, memory_bound, 100.0 * rate / bound);
  }
  if (!cuda) {
    std::printf("decode 64 rows, general sampling path instead of the fused one (runs alternated): %.0f tokens/s: "
                "%.1f%% of the lower bound; fused %.2fx general\n",
                general64, 100.0 * general64 / fp32_bound64, fused64 / general64);
  }
  if (run_bf16) {
    // The same with bf16 sampling (SamplingConfig::weights: bf16 weights for
    // the products and a bf16 KV cache), against bounds in bf16: the bf16 GEMM
    // rate measured here and 2 bytes a value; and, for comparison, against
    // the fp32 bound above.
    if (!cuda) {
      gemm_bf16 = gemm_gflops(2048, 5, torch::kBFloat16);
      std::printf("bf16 GEMM 2048^3: %.1f GFLOP/s\n", gemm_bf16);
    }
    SamplingConfig sc16 = sc;
    sc16.weights = "bf16";
    for (int rows : row_counts) {
      const double rate = decode_rate(rows, sc16);
      double gemm_bound = 0, memory_bound = 0;
      const double bound = lower_bound(rows, gemm_bf16, 2.0, &gemm_bound, &memory_bound);
      std::printf("decode %2d rows x %d new tokens, bf16 weights and KV cache: %.0f tokens/s; bf16 GEMM bound %.0f, memory bound %.0f: "
                  "%.1f%% of the lower",
                  rows, new_tokens, rate, gemm_bound, memory_bound, 100.0 * rate / bound);
      if (rows == 64) std::printf("; %.1f%% of the fp32 lower bound", 100.0 * rate / fp32_bound64);
      std::printf("\n");
    }
  }

  // The KV cache against recomputing the whole prefix, 8 rows.
  std::vector<std::vector<int32_t>> prompts(8, std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8});
  auto t0 = Clock::now();
  Generation g = generate(model, prompts, sc, {}, 0);
  const double cached = g.lengths.sum().item<double>() / since(t0);
  t0 = Clock::now();
  Generation u = generate_uncached(model, prompts, sc, {}, 0);
  const double uncached = u.lengths.sum().item<double>() / since(t0);
  std::printf("generation (8 rows x %d new tokens): KV cache %.0f tokens/s, full recompute %.0f tokens/s, speed-up %.1fx\n",
              new_tokens, cached, uncached, cached / uncached);

  // K samples of each prompt, as the candidates stage and GRPO/RLOO draw
  // them: each prompt's pass shared by its samples (generate_samples)
  // against the prompt repeated K times in one batch (generate). 8 prompts
  // of 96 tokens x 8 samples, 48 new tokens; the same tokens either way.
  const int64_t k = 8, prompt_len = 96;
  std::vector<std::vector<int32_t>> distinct, repeated;
  for (int p = 0; p < 8; ++p) {
    std::vector<int32_t> ids;
    for (int64_t t = 0; t < prompt_len; ++t) ids.push_back(static_cast<int32_t>((p * 131 + t * 17) % cfg.vocab_size));
    distinct.push_back(ids);
    for (int64_t j = 0; j < k; ++j) repeated.push_back(ids);
  }
  SamplingConfig kc;
  kc.temperature = 1.0;
  kc.max_new_tokens = 48;
  double shared_s = 1e9, repeated_s = 1e9, tokens = 0;
  for (int r = 0; r < 2; ++r) {
    t0 = Clock::now();
    Generation gs = generate_samples(model, distinct, k, kc, {}, 0);
    shared_s = std::min(shared_s, since(t0));
    tokens = gs.lengths.sum().item<double>();
    t0 = Clock::now();
    generate(model, repeated, kc, {}, 0);
    repeated_s = std::min(repeated_s, since(t0));
  }
  std::printf("8 prompts of %lld tokens x %lld samples, %d new tokens: shared prompt pass %.2f s (%.0f tokens/s), "
              "prompt repeated %.2f s (%.0f tokens/s), speed-up %.2fx\n",
              static_cast<long long>(prompt_len), static_cast<long long>(k), kc.max_new_tokens, shared_s,
              tokens / shared_s, repeated_s, tokens / repeated_s, repeated_s / shared_s);
  return 0;
}

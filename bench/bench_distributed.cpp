// Benchmark: data-parallel training throughput on c10d Gloo for 1 and 2
// processes with the same global batch, and the share of step time spent
// waiting for the gradient all-reduce. All configurations run in one
// invocation, one after another, so their ratios compare like with like.
//
//   build/bench/bench_distributed [--steps N] [--batch GLOBAL] [--model small|medium]
//
// Each configuration is a set of fresh processes started the way torchrun
// starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), each
// running the same training step the pretrain stage runs: forward, backward
// with GradientSync's bucketed all-reduce overlapping it, clip, AdamW.
// "all-reduce wait" is the time finish() blocks after backward (the part of
// communication that did not overlap); "full all-reduce" is one blocking
// all-reduce of every gradient, for scale.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/runtime.h"
#include "policy/gpt.h"
#include "pretrain/pretrain.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/runtime.h"

extern char** environ;

using namespace rlhf;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Options {
  int steps = 6;
  int batch = 16;  // global batch (sequences of 256 tokens)
  std::string model = "small";
};

GPTConfig model_config(const std::string& size) {
  GPTConfig c;
  c.vocab_size = 4096;
  c.n_positions = 256;
  if (size == "medium") {  // bench_model's reference size
    c.n_layer = 6, c.n_head = 6, c.n_embd = 384;
  } else {  // configs/pretrain.toml's default model
    c.n_layer = 4, c.n_head = 4, c.n_embd = 256;
  }
  return c;
}

// One rank's work; rank 0 writes "tok_s step_s wait_s full_allreduce_s" to `out`.
int worker(const Options& o, const std::string& out) {
  const DistInfo dist = init_distributed();
  const GPTConfig cfg = model_config(o.model);
  GPT model(cfg);
  init_gpt_weights(*model, cfg, 1);
  std::vector<NamedParameter> params;
  std::vector<torch::Tensor> weights;
  for (auto& [name, p] : named_parameters(*model)) {
    params.push_back({name, p, default_decay(name, p)});
    weights.push_back(p);
  }
  broadcast_parameters(dist, weights);
  AdamW opt(params, AdamWConfig());
  GradientSync sync(dist, params);
  const int64_t T = cfg.n_positions;
  const int local = o.batch / dist.world_size;
  torch::manual_seed(100 + dist.rank);
  torch::Tensor x = torch::randint(cfg.vocab_size, {local, T});
  torch::Tensor y = torch::randint(cfg.vocab_size, {local, T});
  auto step = [&] {
    torch::Tensor loss = next_token_loss(model->forward(x), y) / dist.world_size;
    sync.arm();
    loss.backward();
    sync.finish();
    clip_grad_norm(params, 1.0);
    opt.step(1e-4);
    opt.zero_grad();
  };
  step();  // warm-up: allocations, first collectives
  sync.take_wait_seconds();
  barrier(dist);
  const auto t0 = Clock::now();
  for (int s = 0; s < o.steps; ++s) step();
  barrier(dist);
  const double secs = since(t0);
  const double wait = sync.take_wait_seconds();

  double full = 0;
  if (dist.active()) {
    std::vector<torch::Tensor> grads;
    for (auto& p : weights) grads.push_back(torch::ones_like(p));
    dist.comm->all_reduce_sum(grads);  // warm-up
    const int reps = 5;
    const auto t1 = Clock::now();
    for (int r = 0; r < reps; ++r) dist.comm->all_reduce_sum(grads);
    full = since(t1) / reps;
  }
  if (dist.is_main()) {
    std::ofstream f(out);
    f << static_cast<double>(o.batch) * T * o.steps / secs << ' ' << secs / o.steps << ' ' << wait / o.steps << ' '
      << full << '\n';
  }
  return 0;
}

struct Result {
  double tok_s = 0, step_s = 0, wait_s = 0, full_s = 0;
};

// Starts `world` ranks of this program with `threads` threads each and returns rank 0's figures.
Result launch(const Options& o, int world, int threads, int port) {
  const std::string out = "/tmp/bench_distributed." + std::to_string(::getpid()) + ".txt";
  std::vector<pid_t> pids;
  for (int r = 0; r < world; ++r) {
    ::setenv("RANK", std::to_string(r).c_str(), 1);
    ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
    ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
    ::setenv("MASTER_ADDR", "127.0.0.1", 1);
    ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
    ::setenv("RLHF_THREADS", std::to_string(threads).c_str(), 1);
    std::vector<std::string> args = {"/proc/self/exe", "--steps", std::to_string(o.steps), "--batch",
                                     std::to_string(o.batch), "--model", o.model, "--out", out};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = -1;
    if (posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) {
      std::fprintf(stderr, "could not start a rank\n");
      std::exit(1);
    }
    pids.push_back(pid);
  }
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RLHF_THREADS"}) ::unsetenv(v);
  bool ok = true;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  Result r;
  std::ifstream f(out);
  if (!ok || !(f >> r.tok_s >> r.step_s >> r.wait_s >> r.full_s)) {
    std::fprintf(stderr, "a rank failed (world %d)\n", world);
    std::exit(1);
  }
  std::remove(out.c_str());
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  ensure_process_environment(argc, argv);
  Options o;
  std::string out;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) o.steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) o.batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--model")) o.model = argv[i + 1];
    else if (!std::strcmp(argv[i], "--out")) out = argv[i + 1];
  }
  if (std::getenv("RANK")) {
    const char* t = std::getenv("RLHF_THREADS");
    set_torch_threads(t ? std::atoi(t) : 0);
    try {
      return worker(o, out);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "rank %s: %s\n", std::getenv("RANK"), e.what());
      return 1;
    }
  }
  const GPTConfig cfg = model_config(o.model);
  const int cpus = available_cpus();
  std::printf("model %s (%lld parameters), global batch %d x %lld tokens, %d steps, %d CPUs, LibTorch %s\n",
              o.model.c_str(), static_cast<long long>(cfg.num_parameters()), o.batch,
              static_cast<long long>(cfg.n_positions), o.steps, cpus, TORCH_VERSION);
  struct Run {
    int world, threads;
  };
  const std::vector<Run> runs = {{1, cpus}, {1, 1}, {2, std::max(1, cpus / 2)}};
  const int port = 29400 + static_cast<int>(::getpid() % 500);
  std::printf("| processes x threads | tokens/s | step (s) | all-reduce wait (s) | wait share | full all-reduce (s) |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  double base = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    const Result r = launch(o, runs[i].world, runs[i].threads, port + static_cast<int>(i));
    if (i == 0) base = r.tok_s;
    std::printf("| %d x %d | %.0f (%.2fx) | %.3f | %.3f | %.1f%% | %.3f |\n", runs[i].world, runs[i].threads, r.tok_s,
                r.tok_s / base, r.step_s, r.wait_s, 100.0 * r.wait_s / r.step_s, r.full_s);
    std::fflush(stdout);
  }
  return 0;
}

// A Qwen2.5-0.5B-shaped model on this machine: random weights with the real
// shape (24 layers, 896 wide, 14 heads with 2 key/value heads, a 4,864-wide
// MLP, 151,936 tokens, tied embeddings, q/k/v biases), written as a
// Hugging Face folder in bf16 and loaded back as a user's checkpoint would be.
// Prints load time, peak memory, generation tokens/s at batch 1 and 16,
// LoRA fine-tuning tokens/s, and one PPO iteration with LoRA (policy,
// reference, reward and value models of this shape) in a process of its own,
// so its peak memory is its own.
//
//   build/bench/bench_hf_model [--threads 0] [--new-tokens 32] [--sft-steps 3] [--ppo-rollouts 8]
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>

#include "common/fs.h"
#include "common/runtime.h"
#include "policy/adapt.h"
#include "policy/checkpoint.h"
#include "policy/generate.h"
#include "policy/gpt.h"
#include "reward/reward_model.h"
#include "rollout/ppo.h"
#include "train/runtime.h"

using namespace rlhf;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Peak resident memory of this process so far, GiB.
double peak_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / (1024.0 * 1024.0);
}

GPTConfig qwen25_05b() {
  GPTConfig c;
  c.arch = "llama";
  c.model_type = "qwen2";
  c.vocab_size = 151936;
  c.n_embd = 896;
  c.n_layer = 24;
  c.n_head = 14;
  c.n_kv_head = 2;
  c.intermediate_size = 4864;
  c.n_positions = 32768;
  c.rope_theta = 1000000;
  c.layer_norm_epsilon = 1e-6;
  c.tie_word_embeddings = true;
  c.qkv_bias = true;
  return c;
}

// The inputs of a PPO run from this shape: an SFT-like policy folder (with a
// small tokenizer of ours: its chat markers and template), a reward model
// from the same weights, and prompts.
void write_ppo_inputs(const std::string& dir, const std::string& policy_folder) {
  std::vector<std::string> docs;
  for (int i = 0; i < 200; ++i) {
    docs.push_back("Hello, I ordered a blue kettle (order #" + std::to_string(40000 + i * 7) +
                   ") and it has not arrived. Could you check where it is and when it will come?");
  }
  TokenizerTrainOptions to;
  to.vocab_size = 1000;
  const Tokenizer tok = Tokenizer::train(docs, to);
  LoadedPolicy p;  // the weights alone: the folder has no tokenizer
  p.model = GPT(gpt_config_from_hf(read_json_file(join_path(policy_folder, "config.json")), policy_folder));
  load_weights(*p.model, load_model_tensors(policy_folder), policy_folder);
  CheckpointWrite w;
  for (auto& [name, t] : model_weights(*p.model)) w.weights[name] = t.to(torch::kBFloat16);
  w.hf_config = gpt_config_to_hf(p.model->config());
  w.hf_config["torch_dtype"] = "bfloat16";
  w.tokenizer = &tok;
  save_checkpoint(join_path(dir, "policy"), w);
  p.tokenizer = tok;
  ScalarHeadModel rm = reward_model_from_policy(p, 3);
  CheckpointWrite r;
  for (auto& [name, t] : model_weights(*rm)) r.weights[name] = t.to(torch::kBFloat16);
  r.hf_config = reward_config_to_hf(*rm, tok.special_id(special::kEndOfText));
  r.tokenizer = &tok;
  save_checkpoint(join_path(dir, "rm"), r);
  std::string prompts;
  for (int i = 0; i < 16; ++i) prompts += R"({"prompt": "Where is my order #)" + std::to_string(50000 + i) + "?\"}\n";
  write_file_atomic(join_path(dir, "prompts.jsonl"), prompts);
}

// One PPO iteration with LoRA; run in a child process (--ppo-child DIR).
int ppo_child(const std::string& dir, int threads, int rollouts) {
  PpoConfig c;
  c.out_dir = join_path(dir, "ppo");
  c.policy = join_path(dir, "policy");
  c.reward_model = join_path(dir, "rm");
  c.prompts = join_path(dir, "prompts.jsonl");
  c.validation.prompts = "";
  c.rollout.batch_size = rollouts;
  c.rollout.generation_batch = rollouts;
  c.rollout.max_new_tokens = 32;
  c.train.iterations = 1;
  c.train.ppo_epochs = 1;
  c.train.minibatches = 1;
  c.train.micro_batch = std::min(4, rollouts);
  c.train.threads = threads;
  c.lora.enabled = true;
  c.lora.rank = 16;
  c.lora.alpha = 32;
  c.lora.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  const auto t0 = Clock::now();
  run_ppo(c);
  std::printf("one PPO iteration with LoRA (rank 16, all projections; %d rollouts of up to 32 tokens, 1 epoch; "
              "policy + reference + reward + value of this shape): %.1f s including loading; peak %.2f GiB\n",
              rollouts, seconds_since(t0), peak_gib());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  ensure_process_environment(argc, argv);
  int threads = 0, new_tokens = 32, sft_steps = 3, rollouts = 8;
  std::string ppo_dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--new-tokens")) new_tokens = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--sft-steps")) sft_steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--ppo-rollouts")) rollouts = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--ppo-child")) ppo_dir = argv[i + 1];
  }
  if (!ppo_dir.empty()) {
    return ppo_child(ppo_dir, set_torch_threads(threads), rollouts);
  }
  threads = set_torch_threads(threads);
  const std::string dir = "/tmp/rlhf-bench-hf-" + std::to_string(::getpid());
  const GPTConfig config = qwen25_05b();
  std::printf("bench_hf_model: Qwen2.5-0.5B shape, %.0fM parameters, %d LibTorch threads, %s\n",
              static_cast<double>(config.num_parameters()) / 1e6, threads, process_environment_summary().c_str());
  {
    GPT m(config);
    init_gpt_weights(*m, config, 1);
    CheckpointWrite w;
    for (auto& [name, t] : model_weights(*m)) w.weights[name] = t.to(torch::kBFloat16);
    w.hf_config = gpt_config_to_hf(config);
    w.hf_config["torch_dtype"] = "bfloat16";
    save_checkpoint(dir, w);
  }
  const double written = peak_gib();

  {  // the figures of this process; freed before PPO runs in its own
  auto t0 = Clock::now();
  GPT model(gpt_config_from_hf(read_json_file(join_path(dir, "config.json")), dir));
  load_weights(*model, load_model_tensors(dir), dir);
  model->eval();
  const double load_s = seconds_since(t0);
  std::printf("load (bf16 safetensors -> fp32): %.1f s; peak memory %.2f GiB (%.2f GiB while writing the folder)\n",
              load_s, peak_gib(), written);

  SamplingConfig greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = new_tokens;
  for (int batch : {1, 16}) {
    std::vector<std::vector<int32_t>> prompts(batch);
    for (int b = 0; b < batch; ++b) {
      for (int i = 0; i < 64; ++i) prompts[b].push_back(1000 + (b * 131 + i * 17) % 50000);
    }
    t0 = Clock::now();
    const Generation g = generate(model, prompts, greedy, {}, 0);
    const double s = seconds_since(t0);
    std::printf("generation, batch %2d: %d new tokens each after 64-token prompts: %.1f tokens/s (%.1f s); peak %.2f GiB\n",
                batch, new_tokens, batch * new_tokens / s, s, peak_gib());
  }

  LoraConfig lc;
  lc.enabled = true;
  lc.rank = 16;
  lc.alpha = 32;
  lc.targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  LoraAdapters lora(model, lc, 7);
  std::vector<torch::Tensor> params;
  for (const auto& p : lora.parameters()) params.push_back(p.tensor);
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
  model->train();
  const int64_t B = 4, T = 256;
  const torch::Tensor ids = torch::randint(1000, 50000, {B, T + 1}, torch::kLong);
  double sft_s = 0;
  for (int step = 0; step <= sft_steps; ++step) {
    t0 = Clock::now();
    opt.zero_grad();
    const torch::Tensor logits = model->forward(ids.narrow(1, 0, T));
    const torch::Tensor loss =
        torch::nn::functional::cross_entropy(logits.reshape({B * T, -1}), ids.narrow(1, 1, T).reshape({B * T}));
    loss.backward();
    opt.step();
    if (step > 0) sft_s += seconds_since(t0);  // the first step warms up
  }
  std::printf("LoRA SFT (rank 16 on q/k/v/o/gate/up/down, %.1fM trainable), batch %lld x %lld tokens: %.0f tokens/s; "
              "peak %.2f GiB\n",
              static_cast<double>(lora.num_parameters()) / 1e6, static_cast<long long>(B), static_cast<long long>(T),
              sft_steps * B * T / sft_s, peak_gib());
  }
  // PPO in a process of its own: its peak memory is PPO's alone.
  write_ppo_inputs(dir, dir);
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    const std::string self = "/proc/self/exe";
    const std::string t = std::to_string(threads), r = std::to_string(rollouts);
    execl(self.c_str(), argv[0], "--ppo-child", dir.c_str(), "--threads", t.c_str(), "--ppo-rollouts", r.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  remove_all(dir);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

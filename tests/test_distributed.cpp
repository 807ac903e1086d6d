// Data-parallel training on c10d: two ranks on loopback train to the same
// parameters as one process with the same global batch (pretraining through
// the CLI as two processes; PPO, GRPO and DPO as two threads of this process), only rank 0
// writes, and a rank that dies stops the others with an error in bounded time.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <thread>

#include "common/fs.h"
#include "dpo/dpo.h"
#include "policy/checkpoint.h"
#include "process_util.h"
#include "reward/rm_train.h"
#include "rollout/grpo.h"
#include "rollout/ppo.h"
#include "test_util.h"
#include "tiny_preferences.h"
#include "tiny_fixtures.h"
#include "train/distributed.h"

namespace rlhf {
namespace {

// Parameters of two checkpoints agree within a float tolerance: the ranks sum
// partial gradients in a different order than one process does.
void expect_same_weights(const std::string& a, const std::string& b, double tol) {
  const auto wa = load_safetensors(a + "/model.safetensors").tensors, wb = load_safetensors(b + "/model.safetensors").tensors;
  ASSERT_EQ(wa.size(), wb.size());
  double worst = 0;
  for (const auto& [name, t] : wa) {
    worst = std::max(worst, (t - wb.at(name)).abs().max().item<double>());
  }
  EXPECT_LT(worst, tol) << "largest parameter difference " << worst;
  EXPECT_GT(wa.size(), 0u);
}

std::vector<std::string> pretrain_args(const std::string& corpus, const std::string& out, int batch) {
  return {"pretrain", "--out_dir=" + out, "--data.corpus=" + corpus, "--data.vocab_size=300", "--model.n_layer=2",
          "--model.n_embd=32", "--model.n_head=2", "--model.n_positions=32", "--train.batch_size=" + std::to_string(batch),
          "--train.max_steps=8", "--train.checkpoint_interval=4", "--train.eval_interval=8", "--train.eval_batches=2",
          "--train.threads=1", "--schedule.warmup_steps=2", "--sample.prompts="};
}

void write_corpus(const std::string& dir) {
  make_dirs(dir);
  std::string text;
  uint64_t x = 3;
  const char* words[] = {"alpha", "beta", "gamma", "delta", "order", "refund", "thanks", "the", "and", "of"};
  for (int i = 0; i < 20000; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    text += words[(x >> 33) % 10];
    text += i % 9 == 8 ? ". " : " ";
  }
  write_file_atomic(dir + "/a.txt", text);
}

int free_port() {
  // Ports of the ephemeral range, varied per process to avoid collisions.
  return 29500 + static_cast<int>(::getpid() % 2000);
}

pid_t spawn_rank(const std::vector<std::string>& args, const std::string& log, int rank, int world, int port,
                 int timeout_s = 30) {
  ::setenv("RANK", std::to_string(rank).c_str(), 1);
  ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
  ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
  ::setenv("RLHF_DIST_TIMEOUT_S", std::to_string(timeout_s).c_str(), 1);
  const pid_t pid = test::spawn_cli(args, log);
  for (const char* v : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "RLHF_DIST_TIMEOUT_S"}) ::unsetenv(v);
  return pid;
}


// Two ranks with half the batch each end where one process ends.
void two_ranks_pretrain_like_one(const std::string& name, const std::vector<std::string>& model_args) {
  test::TempDir dir(name);
  write_corpus(dir.file("corpus"));
  auto args = [&](const std::string& out, int batch) {
    std::vector<std::string> a = pretrain_args(dir.file("corpus"), dir.file(out), batch);
    a.insert(a.end(), model_args.begin(), model_args.end());
    return a;
  };
  ASSERT_EQ(test::run_cli(args("one", 8), dir.file("one.log")), 0) << read_file(dir.file("one.log"));
  const int port = free_port();
  const pid_t r0 = spawn_rank(args("two", 4), dir.file("r0.log"), 0, 2, port);
  const pid_t r1 = spawn_rank(args("two", 4), dir.file("r1.log"), 1, 2, port);
  ASSERT_EQ(test::wait_exit(r0), 0) << read_file(dir.file("r0.log"));
  ASSERT_EQ(test::wait_exit(r1), 0) << read_file(dir.file("r1.log"));
  // Tolerance: fp32 sums in another order, 8 AdamW steps.
  expect_same_weights(resolve_checkpoint(dir.file("one")), resolve_checkpoint(dir.file("two")), 1e-4);
  // Only rank 0 wrote: one metrics line per step and eval, nothing logged by rank 1.
  EXPECT_EQ(test::file_lines(dir.file("two/metrics.jsonl")).size(), test::file_lines(dir.file("one/metrics.jsonl")).size());
  EXPECT_EQ(read_file(dir.file("r1.log")), "");
  EXPECT_NE(read_file(dir.file("r0.log")).find("distributed: 2 ranks"), std::string::npos);
}

TEST(Distributed, TwoRanksPretrainLikeOneProcessWithTheSameGlobalBatch) {
  two_ranks_pretrain_like_one("ddp-pretrain", {});
}

// The Llama family too (Qwen2-style: grouped-query attention, q/k/v biases, untied head).
TEST(Distributed, TwoRanksTrainALlamaFamilyModelLikeOneProcess) {
  two_ranks_pretrain_like_one("ddp-llama", {"--model.arch=llama", "--model.model_type=qwen2", "--model.qkv_bias=true",
                                            "--model.n_kv_head=1", "--model.intermediate_size=64",
                                            "--model.tie_word_embeddings=false"});
}

TEST(Distributed, ARankThatDiesStopsTheOthersWithAnErrorInBoundedTime) {
  test::TempDir dir("ddp-kill");
  write_corpus(dir.file("corpus"));
  auto args = pretrain_args(dir.file("corpus"), dir.file("run"), 4);
  args[9] = "--train.max_steps=100000";  // long enough to be killed
  const int port = free_port() + 1;
  const pid_t r0 = spawn_rank(args, dir.file("r0.log"), 0, 2, port);
  const pid_t r1 = spawn_rank(args, dir.file("r1.log"), 1, 2, port);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((!path_exists(dir.file("run/metrics.jsonl")) || read_file(dir.file("run/metrics.jsonl")).empty()) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(r1, SIGKILL);
  test::wait_exit(r1);
  const auto killed = std::chrono::steady_clock::now();
  const int status = test::wait_exit(r0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  EXPECT_NE(status, 0);
  EXPECT_LT(seconds, 45.0) << "rank 0 took too long to notice";
  const std::string log = read_file(dir.file("r0.log"));
  EXPECT_NE(log.find("error (network)"), std::string::npos) << log;
  EXPECT_NE(log.find("Another rank has probably died"), std::string::npos) << log;
}

TEST(Distributed, AStoreThatCannotBeReachedIsAClearError) {
  test::TempDir dir("ddp-nostore");
  write_corpus(dir.file("corpus"));
  // Rank 1 alone: nobody hosts the store; the rendezvous gives up after the 3 s timeout.
  const pid_t r1 =
      spawn_rank(pretrain_args(dir.file("corpus"), dir.file("run"), 4), dir.file("r1.log"), 1, 2, free_port() + 2, 3);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NE(test::wait_exit(r1), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 20.0);
  const std::string log = read_file(dir.file("r1.log"));
  EXPECT_NE(log.find("MASTER_ADDR"), std::string::npos) << log;
}

// Runs `train` as ranks 0 and 1 of one job, each on its own thread over
// loopback; fails the test with a rank's error.
void run_two_ranks(int port, const std::function<void(const DistInfo&)>& train) {
  std::vector<std::thread> ranks;
  std::vector<std::string> errors(2);
  for (int r = 0; r < 2; ++r) {
    ranks.emplace_back([&, r] {
      try {
        DistInfo d;
        d.rank = r;
        d.world_size = 2;
        d.comm = make_gloo_communicator(r, 2, "127.0.0.1", port, std::chrono::seconds(60));
        train(d);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  ASSERT_EQ(errors[0], "");
  ASSERT_EQ(errors[1], "");
}

TEST(Distributed, TwoRanksOfPpoMatchOneProcessWithTheSameGlobalBatch) {
  test::TempDir dir("ddp-ppo");
  const int32_t vocab = test::write_tiny_ppo_inputs(dir.path());
  const int limit = vocab / 10;
  const RewardFn reward = [limit](const SampledReplies& r) {
    return ((r.response_ids < limit).to(torch::kFloat) * r.response_mask).sum(1);
  };
  auto config = [&](const std::string& out) {
    PpoConfig p;
    p.out_dir = dir.file(out);
    p.policy = dir.file("policy");
    p.reward_model = "";
    p.prompts = dir.file("prompts.jsonl");
    p.validation.prompts = "";
    p.rollout.batch_size = 16;
    p.rollout.generation_batch = 8;  // the same generation batches in both runs
    p.rollout.max_new_tokens = 10;
    p.train.iterations = 3;
    p.train.minibatches = 2;
    p.train.micro_batch = 4;
    p.train.lr = 3e-3;
    p.train.value_lr = 3e-3;
    p.train.threads = 1;
    return p;
  };
  run_ppo(config("one"), reward);
  run_two_ranks(free_port() + 3, [&](const DistInfo& d) { run_ppo(config("two"), reward, d); });
  // Rollouts are identical; training sums partial gradients in another order.
  expect_same_weights(resolve_checkpoint(dir.file("one")), resolve_checkpoint(dir.file("two")), 2e-4);
  EXPECT_EQ(test::file_lines(dir.file("two/metrics.jsonl")).size(), 3u);
}

// GRPO: each rank samples the groups of its half of the prompts; the loss
// is normalised by the global minibatch, so two ranks train as one.
TEST(Distributed, TwoRanksOfGrpoMatchOneProcessWithTheSameGlobalBatch) {
  test::TempDir dir("ddp-grpo");
  const int32_t vocab = test::write_tiny_ppo_inputs(dir.path());
  const int limit = vocab / 10;
  const RewardFn reward = [limit](const SampledReplies& r) {
    return ((r.response_ids < limit).to(torch::kFloat) * r.response_mask).sum(1);
  };
  auto config = [&](const std::string& out) {
    GrpoConfig g;
    g.out_dir = dir.file(out);
    g.policy = dir.file("policy");
    g.reward_model = "";
    g.prompts = dir.file("prompts.jsonl");
    g.validation.prompts = "";
    g.rollout.prompts = 4;
    g.rollout.samples = 4;
    g.rollout.generation_batch = 8;  // the same generation batches in both runs
    g.rollout.max_new_tokens = 10;
    g.train.iterations = 3;
    g.train.epochs = 2;
    g.train.minibatches = 2;
    g.train.micro_batch = 4;
    g.train.lr = 3e-3;
    g.train.threads = 1;
    return g;
  };
  run_grpo(config("one"), reward);
  run_two_ranks(free_port() + 5, [&](const DistInfo& d) { run_grpo(config("two"), reward, d); });
  expect_same_weights(resolve_checkpoint(dir.file("one")), resolve_checkpoint(dir.file("two")), 2e-4);
  const auto one = test::file_lines(dir.file("one/metrics.jsonl")), two = test::file_lines(dir.file("two/metrics.jsonl"));
  ASSERT_EQ(two.size(), 3u);
  ASSERT_EQ(one.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_NEAR(Json::parse(one[i]).at("env/reward_mean").get<double>(),
                Json::parse(two[i]).at("env/reward_mean").get<double>(), 1e-5)
        << "iteration " << i + 1 << " sampled different replies";
  }
}

// DPO: each rank takes its share of every step's pairs; the loss is
// normalised by the whole step's weight, so two ranks train as one.
TEST(Distributed, TwoRanksOfDpoMatchOneProcessWithTheSameGlobalBatch) {
  test::TempDir dir("ddp-dpo");
  test::write_tiny_ppo_inputs(dir.path());
  const std::vector<PreferencePair> pairs =
      test::polite_over_curt_pairs(16, "Hi, it shipped today. Have a great day!", "No.");
  auto config = [&](const std::string& out) {
    DpoConfig c;
    c.out_dir = dir.file(out);
    c.policy = dir.file("policy");
    c.train.batch_size = 4;  // per rank: 8 pairs a step in the one-process run
    c.train.max_steps = 4;
    c.train.threads = 1;
    c.schedule.lr = 3e-3;
    c.schedule.warmup_steps = 1;
    return c;
  };
  DpoConfig one = config("one");
  one.train.batch_size = 8;
  run_dpo(one, pairs, pairs, 0);
  run_two_ranks(free_port() + 6, [&](const DistInfo& d) { run_dpo(config("two"), pairs, pairs, 0, d); });
  expect_same_weights(resolve_checkpoint(dir.file("one")), resolve_checkpoint(dir.file("two")), 2e-4);
  const auto a = test::file_lines(dir.file("one/metrics.jsonl")), b = test::file_lines(dir.file("two/metrics.jsonl"));
  ASSERT_EQ(a.size(), b.size());
  EXPECT_NEAR(Json::parse(a.back()).at("eval/loss").get<double>(), Json::parse(b.back()).at("eval/loss").get<double>(),
              1e-4);
}

TEST(Distributed, TwoProcessesOfPpoMatchOneWithTheSameGlobalBatchAndOnlyRankZeroWrites) {
  test::TempDir dir("ddp-ppo-cli");
  test::write_tiny_ppo_inputs(dir.path());
  {  // A tiny reward model from the policy: a few Bradley-Terry steps.
    const std::vector<PreferencePair> pairs =
        test::polite_over_curt_pairs(8, "Hi, it shipped today. Have a great day!", "No.");
    RewardTrainConfig rm;
    rm.out_dir = dir.file("rm");
    rm.init_from = dir.file("policy");
    rm.train.batch_size = 8;
    rm.train.threads = 1;
    run_reward_training(rm, pairs, pairs, 0);
  }
  auto args = [&](const std::string& out) {
    return std::vector<std::string>{"ppo", "--out_dir=" + dir.file(out), "--policy=" + dir.file("policy"),
                                    "--reward_model=" + dir.file("rm"), "--prompts=" + dir.file("prompts.jsonl"),
                                    "--validation.prompts=" + dir.file("prompts.jsonl"),
                                    "--validation.max_prompts=4", "--validation.interval=3",
                                    "--rollout.batch_size=16", "--rollout.generation_batch=8",
                                    "--rollout.max_new_tokens=10", "--train.iterations=3", "--train.minibatches=2",
                                    "--train.micro_batch=4", "--train.threads=1"};
  };
  ASSERT_EQ(test::run_cli(args("one"), dir.file("one.log")), 0) << read_file(dir.file("one.log"));
  const int port = free_port() + 4;
  const pid_t r0 = spawn_rank(args("two"), dir.file("r0.log"), 0, 2, port);
  const pid_t r1 = spawn_rank(args("two"), dir.file("r1.log"), 1, 2, port);
  ASSERT_EQ(test::wait_exit(r0), 0) << read_file(dir.file("r0.log"));
  ASSERT_EQ(test::wait_exit(r1), 0) << read_file(dir.file("r1.log"));
  // Each rank generated and scored its own 8 rollouts; whitening and
  // statistics were global, so only the order of fp32 sums differs.
  expect_same_weights(resolve_checkpoint(dir.file("one")), resolve_checkpoint(dir.file("two")), 2e-4);
  EXPECT_GE(test::file_lines(dir.file("one/metrics.jsonl")).size(), 3u) << "3 iterations ran";
  EXPECT_EQ(test::file_lines(dir.file("two/metrics.jsonl")).size(), test::file_lines(dir.file("one/metrics.jsonl")).size());
  EXPECT_EQ(read_file(dir.file("r1.log")), "") << "rank 1 logs nothing";
  EXPECT_TRUE(path_exists(dir.file("two/validation.md")));
}

}  // namespace
}  // namespace rlhf

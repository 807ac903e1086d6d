// Benchmark: reward-model training steps and held-out scoring with each
// prompt's tokens run once for all its replies (rm.train.share_prompts)
// against whole prompt + reply sequences, on real labelled pairs, the two
// alternated step by step in one process so a shared machine slows both
// alike.
//
//   build/cli/rlhf labels export --db runs/demo/labels.sqlite --out pairs.jsonl
//   build/bench/bench_reward_model pairs.jsonl runs/demo/sft [--steps N] [--batch N] [--threads N] [--eval-prompts N]
//
// Prints seconds per training step (forward and backward of `batch` prompts
// with all their pairs), the tokens each way computes, the largest reward
// difference between the two, and the time to score the pairs of
// `eval-prompts` prompts as evaluation does.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/runtime.h"
#include "policy/checkpoint.h"
#include "reward/preference.h"
#include "reward/reward_model.h"
#include "reward/rm_train.h"
#include "train/runtime.h"

using namespace rlhf;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int main(int argc, char** argv) {
  ensure_process_environment(argc, argv);
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: %s PAIRS.jsonl SFT_CHECKPOINT [--steps N] [--batch N] [--threads N] [--eval-prompts N]\n"
                         "  PAIRS.jsonl: rlhf labels export --db runs/demo/labels.sqlite --out pairs.jsonl\n", argv[0]);
    return 2;
  }
  int steps = 6, batch = 4, threads = 0, eval_prompts = 16;
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--steps")) steps = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--batch")) batch = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--eval-prompts")) eval_prompts = std::atoi(argv[i + 1]);
  }
  threads = set_torch_threads(threads);
  try {
    const std::vector<PreferencePair> pairs = load_preference_jsonl(argv[1]);
    LoadedPolicy policy = load_policy(argv[2]);
    prepare_chat_tokenizer(policy.tokenizer);
    if (policy.tokenizer.vocab_size() > policy.model->config().vocab_size) {
      policy.model->resize_vocab(policy.tokenizer.vocab_size());
    }
    ScalarHeadModel model = reward_model_from_policy(policy, 42);
    model->train();
    const ChatTemplate chat(policy.tokenizer);
    const std::vector<std::vector<size_t>> groups = group_by_prompt(pairs);
    const GPTConfig& c = model->config();
    std::printf("threads %d, LibTorch %s, %s\n", threads, TORCH_VERSION, process_environment_summary().c_str());
    std::printf("model: %d layers, %d wide, %d heads; %zu pairs on %zu prompts\n", c.n_layer, c.n_embd, c.n_head,
                pairs.size(), groups.size());

    // Training steps, whole then shared on the same batch, after one warm-up each.
    double t_whole = 0, t_shared = 0, max_diff = 0;
    int64_t tok_whole = 0, tok_shared = 0, replies = 0, measured = 0;
    for (int s = 0; s <= steps; ++s) {
      std::vector<const std::vector<size_t>*> micro;
      for (int k = 0; k < batch; ++k) micro.push_back(&groups.at((static_cast<size_t>(s) * batch + k) % groups.size()));
      const PairBatch b = pair_batch(pairs, micro);
      torch::Tensor r[2];
      double t[2];
      for (int shared = 0; shared < 2; ++shared) {
        model->zero_grad();
        const auto t0 = Clock::now();
        r[shared] = pair_batch_rewards(model, chat, b, torch::kCPU, shared == 1);
        pair_batch_losses(b, r[shared], 0.1).sum().backward();
        t[shared] = since(t0);
      }
      if (s == 0) continue;  // warm-up
      ++measured;
      t_whole += t[0];
      t_shared += t[1];
      max_diff = std::max(max_diff, (r[0] - r[1]).abs().max().item<double>());
      const ScoringBatch whole = reward_batch(chat, b.prompts, b.replies, c.n_positions, b.finished);
      tok_whole += whole.input_ids.numel();
      if (const auto sh = shared_prompt_batch(chat, b.prompts, b.replies, c.n_positions, b.finished)) {
        tok_shared += sh->prompt_ids.numel() + sh->reply_ids.numel();
      }
      replies += static_cast<int64_t>(b.replies.size());
    }
    std::printf("training step (%d prompts, %.1f distinct replies each), mean of %ld:\n", batch,
                static_cast<double>(replies) / measured / batch, static_cast<long>(measured));
    std::printf("  whole sequences: %.3f s, %ld padded tokens per step\n", t_whole / measured,
                static_cast<long>(tok_whole / measured));
    std::printf("  shared prompts:  %.3f s, %ld padded tokens per step; speed-up %.2fx; "
                "largest reward difference %.2g\n",
                t_shared / measured, static_cast<long>(tok_shared / measured), t_whole / t_shared, max_diff);

    // Held-out scoring as evaluate_reward_model does it.
    std::vector<PreferencePair> eval;
    for (int k = 0; k < eval_prompts && k < static_cast<int>(groups.size()); ++k) {
      for (size_t i : groups[groups.size() - 1 - k]) eval.push_back(pairs[i]);
    }
    double te[2];
    RewardEval e[2];
    for (int shared = 0; shared < 2; ++shared) {
      const auto t0 = Clock::now();
      e[shared] = evaluate_reward_model(model, chat, eval, 32, torch::kCPU, nullptr, shared == 1);
      te[shared] = since(t0);
    }
    std::printf("evaluation of %zu pairs (%d prompts): whole %.2f s, shared %.2f s, speed-up %.1fx; "
                "label accuracy %.4f / %.4f\n",
                eval.size(), eval_prompts, te[0], te[1], te[0] / te[1], e[0].label_accuracy, e[1].label_accuracy);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "bench_reward_model: %s\n", ex.what());
    return 1;
  }
  return 0;
}

#include "rollout/grpo.h"

#include <cmath>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "rollout/ppo_math.h"
#include "train/data_order.h"
#include "train/optim.h"
#include "train/progress.h"
#include "train/training_run.h"

namespace rlhf {
namespace {

// One iteration's samples on this rank: `samples` replies to each of its
// prompts, their scores and what the update needs.
struct GroupBatch {
  SampledReplies replies;
  std::vector<int64_t> prompt_index;  // one per row, into the prompt set
  torch::Tensor raw_scores, scores;   // [B] reward before and after penalties (and the KL, in "reward" mode)
  std::vector<double> gold;           // per row; NaN without facts
  torch::Tensor old_logprobs;         // [B, N] at sampling time; undefined when on-policy without a KL
  torch::Tensor ref_logprobs;         // [B, N]; undefined when kl.coef is 0
  torch::Tensor advantages;           // [B]
  torch::Tensor full, full_mask;      // [query | reply]
};

// Sums of one iteration's update, over micro-batches.
struct UpdateStats {
  double loss = 0, clipfrac = 0, approx_kl = 0, entropy = 0;
  int steps = 0;
};

}  // namespace

GrpoConfig rloo_defaults() {
  GrpoConfig c;
  c.out_dir = "runs/rloo";
  c.train.advantage = "rloo";
  c.kl.mode = "reward";
  return c;
}

void validate_grpo_config(const GrpoConfig& c, int world_size, bool custom_reward) {
  ppo::parse_group_advantage(c.train.advantage);
  ppo::check_loss_aggregation(c.train.loss_aggregation);
  sampling_weights_dtype(c.rollout.weights, "rollout.weights");
  sampling_weights_dtype(c.validation.weights, "validation.weights");
  if (c.kl.mode != "loss" && c.kl.mode != "reward") {
    fail(ErrorKind::kConfig, "kl.mode '", c.kl.mode, "' is not one of loss (k3 in the loss, GRPO), reward (k1 off the "
                             "score, RLOO)");
  }
  if (c.rollout.prompts % world_size != 0) {
    fail(ErrorKind::kConfig, "rollout.prompts (", c.rollout.prompts, ") must be a multiple of the number of ranks (",
         world_size, ")");
  }
  const int rows = c.rollout.prompts * c.rollout.samples;
  if (rows % c.train.minibatches != 0) {
    fail(ErrorKind::kConfig, "rollout.prompts x rollout.samples (", rows, ") must be a multiple of train.minibatches (",
         c.train.minibatches, ")");
  }
  if (custom_reward) return;
  if (c.reward.model <= 0 && c.reward.rubric <= 0) {
    fail(ErrorKind::kConfig, "the reward is empty: set reward.model (the reward model's weight) or reward.rubric");
  }
  if (c.reward.model > 0 && c.reward_model.empty()) {
    fail(ErrorKind::kConfig, "reward.model is ", c.reward.model, " but reward_model is empty; name a reward model run");
  }
}

OnlineResult run_grpo(const GrpoConfig& cfg, const RewardFn& custom_reward, const DistInfo& dist,
                      const FreshPairsFn& feedback) {
  const auto& tc = cfg.train;
  const auto& rc = cfg.rollout;
  validate_grpo_config(cfg, dist.world_size, static_cast<bool>(custom_reward));
  const ppo::GroupAdvantage advantage_type = ppo::parse_group_advantage(tc.advantage);
  // Another starting policy or reference would mix two runs; rewards, KL
  // and rollout settings may change from the resumed iteration on.
  TrainingRun run(tc.advantage, cfg.out_dir, config_to_json(cfg), tc,
                  ResumeRules::fixing({"policy", "lora", "train.advantage"}), dist);
  const torch::Device device = run.device();

  const uint64_t seed = static_cast<uint64_t>(tc.seed);
  PolicyWithReference m = load_policy_with_reference(cfg.policy, cfg.lora, seed, device);
  ScalarHeadModel reward_model{nullptr};
  if (!cfg.reward_model.empty() && (cfg.reward.model > 0 || !cfg.validation.prompts.empty())) {
    reward_model = load_frozen_reward_model(cfg.reward_model, m, device).model;
  }
  // Policy and reference in one precision, so the KL starts at 0.
  set_compute_dtype(*m.policy, run.compute_dtype());
  set_compute_dtype(*m.reference, run.compute_dtype());
  if (reward_model) set_compute_dtype(*reward_model, run.compute_dtype());
  const ChatTemplate chat(m.tokenizer);
  const std::vector<PromptItem> prompts = load_prompts(cfg.prompts, chat, m.system_prompt);

  std::vector<NamedParameter> params = trainable_parameters(*m.policy, m.lora.get());
  AdamWConfig oc;
  oc.weight_decay = 0.0;
  oc.beta2 = 0.999;
  AdamW optimizer(params, oc);
  EpochOrder order(static_cast<int64_t>(prompts.size()), mix_seed({seed, 0x62f0u}));
  ValidationTracker validation(cfg.validation, chat, m.system_prompt, m.reference,
                               reward_model ? &reward_model : nullptr, dist.is_main());

  if (const auto& resume = run.resume()) {
    restore_training_state(resume->dir, m.policy, m.lora.get(), optimizer);
    validation.restore(resume->state.extra);
  }
  const int64_t start = run.resume_step();
  const int P = rc.prompts, K = rc.samples, W = dist.world_size;
  const int local_p = P / W, local_n = local_p * K, row0 = dist.rank * local_n;
  const int rows = P * K;
  const bool on_policy = tc.epochs == 1 && tc.minibatches == 1;  // the ratio is then exactly 1
  const bool kl_in_loss = cfg.kl.coef > 0 && cfg.kl.mode == "loss";
  log_info(tc.advantage, ": ", prompts.size(), " prompts, ", P, " prompts x ", K, " samples x ", tc.iterations,
           " iterations, ", tc.epochs, " epochs x ", tc.minibatches, " minibatches, loss ", tc.loss_aggregation,
           ", KL ", cfg.kl.coef, " in the ", cfg.kl.mode, ", reward ",
           custom_reward ? std::string("custom") : cfg.reward.describe(), ", ", run.threads(), " threads");

  auto save = [&](int64_t iteration, bool best) {
    run.commit(iteration, best, [&](const std::string& folder) {
      CheckpointWrite w = policy_checkpoint(m.policy, m.lora.get(), m.tokenizer);
      Json extra = {{"kl_coef", cfg.kl.coef}, {"system_prompt", m.system_prompt}};
      extra.update(validation.state());
      w.trainer_state = run.state(iteration, extra).to_json();
      w.optimizer_state = optimizer.state();
      save_checkpoint(folder, w);
    });
  };

  run.start(params, start);
  for (int64_t it = start; it < tc.iterations; ++it) {
    PhaseTimer times;
    GroupBatch b;

    // 1. Samples: K replies to each of this rank's prompts. Prompt p of the
    // iteration and its samples' seeds are the same whoever generates them.
    times.start("generation");
    std::vector<std::vector<int32_t>> query_ids;
    std::vector<uint64_t> seeds;
    std::vector<const PromptItem*> items;
    for (int p = dist.rank * local_p; p < (dist.rank + 1) * local_p; ++p) {
      const int64_t slot = it * P + p;
      const int64_t index = order.at(slot);
      query_ids.push_back(prompts[index].ids);
      for (int j = 0; j < K; ++j) {
        b.prompt_index.push_back(index);
        items.push_back(&prompts[index]);
        seeds.push_back(mix_seed({seed, static_cast<uint64_t>(slot), static_cast<uint64_t>(j), 0x6a11u}));
      }
    }
    SamplingConfig sc;
    sc.temperature = rc.temperature;
    sc.max_new_tokens = rc.max_new_tokens;
    sc.weights = rc.weights;
    b.replies = sample_replies(m.policy, query_ids, K, sc, rc.generation_batch, chat, seeds);
    const SampledReplies& r = b.replies;
    const int64_t tq = r.query_ids.size(1);
    b.full = r.full_ids();
    b.full_mask = r.full_mask();

    // 2. Scores, the log-probs the update compares against, advantages.
    {
      torch::NoGradGuard no_grad;
      times.start("reward");
      if (custom_reward) {
        b.raw_scores = custom_reward(r).to(torch::kFloat);
        b.scores = ppo::apply_missing_eos_penalty(b.raw_scores, r.finished, cfg.reward.missing_eos_penalty);
        b.gold = rubric_scores(r, items, chat);
      } else {
        ReplyScores s = score_replies(cfg.reward, reward_model ? &reward_model : nullptr, r, items, chat);
        b.raw_scores = s.raw;
        b.scores = s.scores;
        b.gold = std::move(s.gold);
      }
      if (!on_policy || cfg.kl.coef > 0) {
        times.start("policy_logprobs");
        b.old_logprobs = response_logprobs(m.policy, b.full, b.full_mask, tq, r.response_ids, rc.temperature);
      }
      if (cfg.kl.coef > 0) {
        times.start("reference");
        b.ref_logprobs = response_logprobs(m.reference, b.full, b.full_mask, tq, r.response_ids, rc.temperature);
      }
      times.start("advantages");
      if (cfg.kl.coef > 0 && !kl_in_loss) {
        // RLOO's form: the reply's summed KL comes off its score before the baseline.
        b.scores = b.scores - cfg.kl.coef * (ppo::kl_k1(b.old_logprobs, b.ref_logprobs) * r.response_mask).sum(1);
      }
      b.advantages = ppo::group_advantages(b.scores, K, advantage_type);
    }

    // 3. Update: epochs over shuffled minibatches of the global batch; each
    // rank trains on its rows of each minibatch.
    times.start("update");
    const double frac = tc.anneal_lr ? 1.0 - static_cast<double>(it) / static_cast<double>(tc.iterations) : 1.0;
    const int mb_size = rows / tc.minibatches;
    UpdateStats st;
    double token_kl_sum = 0;
    for (int epoch = 0; epoch < tc.epochs; ++epoch) {
      const uint64_t shuffle = mix_seed({seed, static_cast<uint64_t>(it), static_cast<uint64_t>(epoch), 0x5e1u});
      for (const std::vector<int64_t>& local : local_minibatches(rows, tc.minibatches, shuffle, row0, local_n)) {
        const double mb_tokens = all_reduce_sum(dist, response_tokens(r.response_mask, local));
        for_each_micro_batch(local, tc.micro_batch, run.sync(), device, [&](const torch::Tensor& idx) {
          auto pick = [&](const torch::Tensor& t) { return t.index_select(0, idx); };
          const torch::Tensor mask = pick(r.response_mask);
          torch::Tensor entropy, clipped;
          const torch::Tensor lp = response_logprobs(m.policy, pick(b.full), pick(b.full_mask), tq,
                                                     pick(r.response_ids), rc.temperature, &entropy);
          const torch::Tensor old = on_policy ? lp.detach() : pick(b.old_logprobs);
          torch::Tensor per_token =
              ppo::clipped_surrogate(lp, old, pick(b.advantages).unsqueeze(1), tc.clip, &clipped);
          if (kl_in_loss) {
            const torch::Tensor k3 = ppo::kl_k3(lp, pick(b.ref_logprobs));
            per_token = per_token + cfg.kl.coef * k3;
            token_kl_sum += (k3.detach() * mask).sum().item<double>();
          }
          const torch::Tensor loss =
              ppo::aggregate_token_loss(per_token, mask, tc.loss_aggregation, rc.max_new_tokens, mb_size, mb_tokens);
          loss.backward();
          st.loss += loss.item<double>();
          st.clipfrac += (clipped.to(torch::kFloat) * mask).sum().item<double>();
          st.entropy += (entropy * mask).sum().item<double>();
          st.approx_kl += 0.5 * ((lp.detach() - old).pow(2) * mask).sum().item<double>();
        });
        ++st.steps;
        clip_grad_norm(params, tc.grad_clip);
        optimizer.step(tc.lr * frac);
        optimizer.zero_grad();
      }
    }

    // 4. Statistics over every rank's samples; fresh pairs for the raters.
    times.start("statistics");
    torch::NoGradGuard no_grad;
    double gold = 0, gold_n = 0;
    for (double g : b.gold) {
      if (!std::isnan(g)) {
        gold += g;
        gold_n += 1;
      }
    }
    // Groups whose K scores are all equal teach nothing (zero advantage).
    const torch::Tensor group_std = b.scores.view({-1, K}).std(1, /*unbiased=*/true);
    const double flat_groups = (group_std < 1e-6).sum().item<double>();
    const double seq_kl = b.ref_logprobs.defined()
                              ? (ppo::kl_k1(b.old_logprobs, b.ref_logprobs) * r.response_mask).sum().item<double>()
                              : 0.0;
    const auto g = all_reduce_sum(dist, {b.raw_scores.sum().item<double>(), b.raw_scores.pow(2).sum().item<double>(),
                                         b.scores.sum().item<double>(), r.response_mask.sum().item<double>(),
                                         r.finished.to(torch::kFloat).sum().item<double>(), gold, gold_n, st.loss,
                                         st.clipfrac, st.entropy, seq_kl, flat_groups, token_kl_sum, st.approx_kl});
    const double n_rows = rows, tokens = std::max(1.0, g[3]), passes = tc.epochs;
    const double reward_mean = g[0] / n_rows;
    const int64_t done = it + 1;
    Json row = {{"step", done},
                {"env/reward_mean", reward_mean},
                {"env/reward_std", std::sqrt(std::max(0.0, g[1] / n_rows - reward_mean * reward_mean))},
                {"env/score_mean", g[2] / n_rows},
                {"env/flat_group_fraction", g[11] / P},
                {"objective/kl", g[10] / n_rows},
                {"objective/kl_coef", cfg.kl.coef},
                {"objective/entropy", g[9] / (tokens * passes)},
                {"policy/clipfrac", g[8] / (tokens * passes)},
                {"policy/approxkl", g[13] / (tokens * passes)},
                {"loss/policy", g[7] / std::max(1, st.steps)},
                {"reply/length", g[3] / n_rows},
                {"reply/finished", g[4] / n_rows},
                {"lr", tc.lr * frac}};
    if (kl_in_loss) row["objective/k3_per_token"] = g[12] / (tokens * passes);
    if (g[6] > 0) row["env/gold_mean"] = g[5] / g[6];
    if (feedback && dist.is_main() && cfg.feedback.every > 0 && done % cfg.feedback.every == 0) {
      // Two replies of one group make a comparison; no extra sampling.
      std::vector<FreshPair> pairs;
      for (int p = 0; p < std::min(local_p, cfg.feedback.prompts); ++p) {
        const PromptItem& item = prompts[b.prompt_index[p * K]];
        const int64_t a = p * K, c = p * K + 1;
        pairs.push_back({conversation_to_json(item.conversation), item.metadata,
                         chat.decode_reply(row_tokens(r.response_ids, r.lengths, a)),
                         chat.decode_reply(row_tokens(r.response_ids, r.lengths, c)), r.finished[a].item<bool>(),
                         r.finished[c].item<bool>(), done});
      }
      feedback(pairs);
    }

    // 5. Validation (rank 0; the others wait) and checkpoints.
    validate_and_checkpoint(validation, m.policy, done, tc.iterations, cfg.kl.coef, run, times,
                            [&](bool best) { save(done, best); });
    times.stop();
    row.update(times.metrics());
    run.log(row);
    log_info(tc.advantage, " iter ", done, "/", tc.iterations, " | reward ", reward_mean,
             g[6] > 0 ? str_cat(" | gold ", g[5] / g[6]) : std::string(), " | kl ", g[10] / n_rows, " | flat groups ",
             g[11], "/", P, " | len ", g[3] / n_rows, " | ", times.summary());
  }

  run.finish();
  return online_result(cfg.out_dir, validation.history());
}

}  // namespace rlhf

#include "rollout/ppo.h"

#include <chrono>
#include <cmath>
#include <set>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "rollout/online.h"
#include "rollout/ppo_math.h"
#include "support/rubric.h"
#include "train/data_order.h"
#include "train/progress.h"
#include "train/distributed.h"
#include "train/training_run.h"

namespace rlhf {
namespace {


// The models of a PPO run: the policy being trained, the frozen reference,
// the value model and (unless a custom reward is given) the reward model.
struct Models {
  GPT policy{nullptr}, reference{nullptr};
  ScalarHeadModel value{nullptr}, reward{nullptr};
  Tokenizer tokenizer;
  std::string system_prompt;
  std::unique_ptr<LoraAdapters> policy_lora, value_lora;  // with lora.enabled
};

Models load_models(const PpoConfig& cfg, bool custom_reward, torch::Device device) {
  Models m;
  const bool lora = cfg.lora.enabled;
  const uint64_t seed = static_cast<uint64_t>(cfg.train.seed);
  PolicyWithReference pr = load_policy_with_reference(cfg.policy, cfg.lora, seed, device);
  m.policy = pr.policy;
  m.reference = pr.reference;
  m.tokenizer = pr.tokenizer;
  m.system_prompt = pr.system_prompt;
  m.policy_lora = std::move(pr.lora);
  if (!custom_reward || !cfg.reward_model.empty()) {
    LoadedRewardModel rm = load_frozen_reward_model(cfg.reward_model, pr, device);
    m.reward = rm.model;
    // The value model starts as the reward model with a zeroed head.
    m.value = ScalarHeadModel(rm.model->config());
    m.value->to(device);
    if (lora) share_weights(*m.value->transformer, *m.reward->transformer);
    else load_weights(*m.value, model_weights(*rm.model), rm.dir);
  } else {
    m.value = ScalarHeadModel(m.policy->config());
    m.value->to(device);
    TensorMap backbone;
    for (const auto& item : m.policy->transformer->named_parameters(true)) backbone["transformer." + item.key()] = item.value();
    load_weights(*m.value, backbone, pr.dir, /*allow_missing=*/true);
  }
  {
    torch::NoGradGuard no_grad;
    m.value->score->weight.zero_();
  }
  if (lora) {
    m.value_lora = std::make_unique<LoraAdapters>(m.value.ptr(), m.value->config().is_llama(), cfg.lora,
                                                  mix_seed({seed, 0x7a1eu}));
    m.value->score->weight.set_requires_grad(true);  // the head trains in full
  }
  m.value->eval();  // dropout off (Huang et al. detail 9): eval mode still trains
  // What the four models hold, counting a tensor shared by two once.
  std::set<const void*> seen;
  double bytes = 0;
  for (torch::nn::Module* module : std::vector<torch::nn::Module*>{m.policy.get(), m.reference.get(), m.value.get(),
                                                                    m.reward ? m.reward.get() : nullptr}) {
    if (module == nullptr) continue;
    for (const auto& [name, t] : model_weights(*module)) {
      if (seen.insert(t.data_ptr()).second) bytes += static_cast<double>(t.numel() * t.element_size());
    }
  }
  log_info("ppo: model weights in memory ", std::round(bytes / (1 << 30) * 100) / 100, " GiB",
           lora ? " (LoRA: the reference shares the policy's base weights, the value model the reward model's)"
                : " (policy, reference, value and reward model each hold their own)");
  return m;
}

// Scalars of one iteration, averaged over micro-batches.
struct TrainStats {
  double policy_loss = 0, value_loss = 0, clipfrac = 0, value_clipfrac = 0, approx_kl = 0, entropy = 0;
  int count = 0;
};

}  // namespace

torch::Tensor response_logprobs(GPT& model, const torch::Tensor& full_ids, const torch::Tensor& full_mask,
                                int64_t query_len, const torch::Tensor& response_ids, double temperature,
                                torch::Tensor* entropy) {
  const int64_t n = response_ids.size(1);
  torch::Tensor logits = model->forward(full_ids, full_mask).narrow(1, query_len - 1, n);
  if (entropy != nullptr) {
    torch::NoGradGuard no_grad;
    *entropy = entropy_from_logits(logits, temperature);
  }
  return logprobs_from_logits(logits, response_ids, temperature);
}

namespace {

// What the phases of one PPO iteration read.
struct PpoContext {
  const PpoConfig& cfg;
  Models& m;
  const ChatTemplate& chat;
  const std::vector<PromptItem>& prompts;
  const RewardFn& custom_reward;
  const DistInfo& dist;
  int rows, row0, local_n;  // the iteration's rollouts (all ranks), and this rank's share
};

// 2. Scoring, without gradients: old and reference log-probs, values, the
// reward, the per-token KL and its penalty, GAE advantages (whitened over
// every rank's rollouts). Returns each row's gold score (NaN without facts).
std::vector<double> score_rollout(const PpoContext& c, Rollout& ro, double kl_coef, PhaseTimer& times) {
  torch::NoGradGuard no_grad;
  const PpoConfig& cfg = c.cfg;
  Models& m = c.m;
  const double temperature = cfg.rollout.temperature;
  const int64_t tq = ro.query_ids.size(1), n = ro.response_ids.size(1);
  const torch::Tensor full = ro.full_ids(), full_mask = ro.full_mask();
  ro.logprobs = response_logprobs(m.policy, full, full_mask, tq, ro.response_ids, temperature);
  times.start("reference");
  ro.ref_logprobs = response_logprobs(m.reference, full, full_mask, tq, ro.response_ids, temperature);
  times.start("value");
  ro.values = m.value->forward_tokens(full, full_mask).narrow(1, tq - 1, n);
  times.start("reward");
  std::vector<const PromptItem*> items;
  for (int64_t i : ro.prompt_index) items.push_back(&c.prompts[i]);
  std::vector<double> gold;
  if (c.custom_reward) {
    ro.raw_scores = c.custom_reward(ro).to(torch::kFloat);
    ro.scores = ppo::apply_missing_eos_penalty(ro.raw_scores, ro.finished, cfg.reward.missing_eos_penalty);
    gold = rubric_scores(ro, items, c.chat);
  } else {
    ReplyScores rs = score_replies(cfg.reward, m.reward ? &m.reward : nullptr, ro, items, c.chat);
    ro.raw_scores = rs.raw;
    ro.scores = rs.scores;
    gold = std::move(rs.gold);
  }
  times.start("advantages");
  // One KL per token: penalised here, logged and fed to the controller.
  ro.kl = ppo::kl_estimate(ro.logprobs, ro.ref_logprobs, cfg.kl.estimator) * ro.response_mask;
  ro.rewards = ppo::token_rewards(ro.scores, ro.kl, ro.response_mask, kl_coef);
  std::tie(ro.advantages, ro.returns) =
      ppo::gae(ro.rewards, ro.values, ro.response_mask, cfg.train.gamma, cfg.train.lambda);
  if (cfg.train.whiten_advantages) {
    const auto s = all_reduce_sum(c.dist, {(ro.advantages * ro.response_mask).sum().item<double>(),
                                           (ro.advantages.pow(2) * ro.response_mask).sum().item<double>(),
                                           ro.response_mask.sum().item<double>()});
    const double mean = s[0] / s[2], var = (s[1] / s[2] - mean * mean) * s[2] / std::max(1.0, s[2] - 1);
    ro.advantages = (ro.advantages - mean) / std::sqrt(var + 1e-8) * ro.response_mask;
  }
  return gold;
}

// 3. The PPO epochs: shuffled minibatches of the global batch, each rank
// training on its rows of each in micro-batches; `frac` scales both
// learning rates (annealing).
TrainStats ppo_update(const PpoContext& c, const Rollout& ro, int64_t it, double frac, GradientSync& sync,
                      AdamW& policy_opt, AdamW& value_opt, const std::vector<NamedParameter>& policy_params,
                      const std::vector<NamedParameter>& value_params) {
  const PpoLoopConfig& tc = c.cfg.train;
  Models& m = c.m;
  const double temperature = c.cfg.rollout.temperature;
  const int64_t tq = ro.query_ids.size(1), n = ro.response_ids.size(1);
  const torch::Tensor full = ro.full_ids(), full_mask = ro.full_mask();
  TrainStats st;
  for (int epoch = 0; epoch < tc.ppo_epochs; ++epoch) {
    const uint64_t shuffle =
        mix_seed({static_cast<uint64_t>(tc.seed), static_cast<uint64_t>(it), static_cast<uint64_t>(epoch)});
    for (const std::vector<int64_t>& local : local_minibatches(c.rows, tc.minibatches, shuffle, c.row0, c.local_n)) {
      const double mb_tokens = all_reduce_sum(c.dist, response_tokens(ro.response_mask, local));
      for_each_micro_batch(local, tc.micro_batch, sync, ro.response_mask.device(), [&](const torch::Tensor& idx) {
        auto pick = [&](const torch::Tensor& t) { return t.index_select(0, idx); };
        const torch::Tensor mask = pick(ro.response_mask);
        torch::Tensor entropy;
        const torch::Tensor lp = response_logprobs(m.policy, pick(full), pick(full_mask), tq, pick(ro.response_ids),
                                                   temperature, &entropy);
        const torch::Tensor v = m.value->forward_tokens(pick(full), pick(full_mask)).narrow(1, tq - 1, n);
        const ppo::PolicyLoss pl =
            ppo::policy_loss(lp, pick(ro.logprobs), pick(ro.advantages), mask, tc.clip, mb_tokens);
        const ppo::ValueLoss vl =
            ppo::value_loss(v, pick(ro.values), pick(ro.returns), mask, tc.value_clip, mb_tokens);
        (pl.loss + tc.vf_coef * vl.loss).backward();
        st.policy_loss += pl.loss.item<double>();
        st.value_loss += vl.loss.item<double>();
        st.clipfrac += pl.clipfrac.item<double>();
        st.value_clipfrac += vl.clipfrac.item<double>();
        st.approx_kl += pl.approx_kl.item<double>();
        st.entropy += ppo::masked_mean(entropy, mask, mb_tokens).item<double>();
      });
      ++st.count;
      clip_grad_norm(policy_params, tc.grad_clip);
      clip_grad_norm(value_params, tc.grad_clip);
      policy_opt.step(tc.lr * frac);
      value_opt.step(tc.value_lr * frac);
      policy_opt.zero_grad();
      value_opt.zero_grad();
    }
  }
  return st;
}

}  // namespace

void validate_ppo_config(const PpoConfig& cfg, int world_size) {
  const auto& rc = cfg.rollout;
  if (rc.batch_size % cfg.train.minibatches != 0 || rc.batch_size % world_size != 0) {
    fail(ErrorKind::kConfig, "rollout.batch_size (", rc.batch_size, ") must be a multiple of train.minibatches (",
         cfg.train.minibatches, ") and of the number of ranks (", world_size, ")");
  }
  if (rc.temperature <= 0) fail(ErrorKind::kConfig, "rollout.temperature must be positive (PPO samples)");
  if (cfg.kl.estimator != "k1" && cfg.kl.estimator != "k3") {
    fail(ErrorKind::kConfig, "kl.estimator '", cfg.kl.estimator, "' is not one of k1, k3");
  }
  sampling_weights_dtype(rc.weights, "rollout.weights");
  sampling_weights_dtype(cfg.validation.weights, "validation.weights");
}

namespace {

SamplingConfig rollout_sampling(const PpoConfig& cfg) {
  SamplingConfig sc;
  sc.temperature = cfg.rollout.temperature;
  sc.max_new_tokens = cfg.rollout.max_new_tokens;
  sc.weights = cfg.rollout.weights;
  return sc;
}

// 1. Rollouts: pure sampling from the current policy. Row i of the
// iteration always gets the same prompt and seed, whoever generates it.
Rollout collect_rollouts(const PpoContext& c, EpochOrder& order, int64_t it, std::vector<uint64_t>* seeds) {
  const PpoConfig& cfg = c.cfg;
  Rollout ro;
  std::vector<std::vector<int32_t>> query_ids;
  for (int i = c.row0; i < c.row0 + c.local_n; ++i) {
    const int64_t k = it * c.rows + i;
    ro.prompt_index.push_back(order.at(k));
    query_ids.push_back(c.prompts[ro.prompt_index.back()].ids);
    seeds->push_back(mix_seed({static_cast<uint64_t>(cfg.train.seed), static_cast<uint64_t>(k), 0x5a3bu}));
  }
  static_cast<SampledReplies&>(ro) =
      sample_replies(c.m.policy, query_ids, 1, rollout_sampling(cfg), cfg.rollout.generation_batch, c.chat, *seeds);
  return ro;
}

// Online RLHF: a second sample for a few of this iteration's prompts, paired
// with the rollout's reply, goes out for rating (rank 0).
std::vector<FreshPair> fresh_pairs(const PpoContext& c, const Rollout& ro, const std::vector<uint64_t>& seeds,
                                   int64_t done) {
  const int k = std::min(c.local_n, c.cfg.feedback.prompts);
  std::vector<std::vector<int32_t>> queries;
  std::vector<uint64_t> second_seeds;
  for (int i = 0; i < k; ++i) {
    queries.push_back(c.prompts[ro.prompt_index[i]].ids);
    second_seeds.push_back(mix_seed({seeds[i], 0xfeedu}));
  }
  const Generation extra = generate(c.m.policy, queries, rollout_sampling(c.cfg), c.chat.stop_tokens(),
                                    c.chat.pad_id(), second_seeds);
  std::vector<FreshPair> pairs;
  for (int i = 0; i < k; ++i) {
    const PromptItem& p = c.prompts[ro.prompt_index[i]];
    pairs.push_back({conversation_to_json(p.conversation), p.metadata,
                     c.chat.decode_reply(row_tokens(ro.response_ids, ro.lengths, i)),
                     c.chat.decode_reply(row_tokens(extra.tokens, extra.lengths, i)), ro.finished[i].item<bool>(),
                     extra.finished[i].item<bool>(), done});
  }
  return pairs;
}

// 4. The iteration's metrics row, over every rank's rollouts; `beta` is the
// KL coefficient the rewards were computed with. Returns the mean KL (the
// same per-token KL that was penalised), for the controller.
Json iteration_metrics(const PpoContext& c, const Rollout& ro, const std::vector<double>& gold_scores,
                       const TrainStats& st, double beta, double lr, int64_t done, double* mean_kl) {
  torch::NoGradGuard no_grad;
  double gold = 0, gold_n = 0;
  for (double gs : gold_scores) {
    if (!std::isnan(gs)) {
      gold += gs;
      gold_n += 1;
    }
  }
  const auto g = all_reduce_sum(c.dist, {ro.kl.sum().item<double>(), ro.raw_scores.sum().item<double>(),
                                         ro.raw_scores.pow(2).sum().item<double>(), ro.scores.sum().item<double>(),
                                         ro.response_mask.sum().item<double>(),
                                         ro.finished.to(torch::kFloat).sum().item<double>(), gold, gold_n,
                                         st.policy_loss, st.value_loss, st.clipfrac, st.value_clipfrac, st.approx_kl,
                                         st.entropy, ppo::masked_var(ro.returns - ro.values, ro.response_mask).item<double>(),
                                         ppo::masked_var(ro.returns, ro.response_mask).item<double>()});
  const double rows = c.rows, n = std::max(1, st.count);
  const double reward_mean = g[1] / rows;
  *mean_kl = g[0] / rows;
  Json row = {{"step", done},
              {"env/reward_mean", reward_mean},
              {"env/reward_std", std::sqrt(std::max(0.0, g[2] / rows - reward_mean * reward_mean))},
              {"env/score_mean", g[3] / rows},
              {"objective/kl", *mean_kl},
              {"objective/kl_coef", beta},
              {"objective/rlhf_reward", g[3] / rows - beta * *mean_kl},
              // Losses are shares of the global minibatch loss, so the sum over ranks is the loss.
              {"objective/entropy", g[13] / n},
              {"policy/approxkl", g[12] / n},
              {"policy/clipfrac", g[10] / n},
              {"loss/policy", g[8] / n},
              {"loss/value", g[9] / n},
              {"val/clipfrac", g[11] / n},
              {"val/explained_variance", g[15] > 0 ? 1.0 - g[14] / g[15] : 0.0},
              {"reply/length", g[4] / rows},
              {"reply/finished", g[5] / rows},
              {"lr", lr}};
  if (g[7] > 0) row["env/gold_mean"] = g[6] / g[7];
  return row;
}

// The policy, its value model (full weights or adapters) and both
// optimisers into a checkpoint folder, and back.
void write_ppo_checkpoint(const std::string& folder, Models& m, const AdamW& policy_opt, const AdamW& value_opt,
                          const Json& trainer_state) {
  CheckpointWrite w = policy_checkpoint(m.policy, m.policy_lora.get(), m.tokenizer);
  w.trainer_state = trainer_state;
  for (const auto& [k, t] : policy_opt.state()) w.optimizer_state["policy/" + k] = t;
  for (const auto& [k, t] : value_opt.state()) w.optimizer_state["value/" + k] = t;
  if (m.value_lora) {
    TensorMap value = m.value_lora->peft_state();
    value["score.weight"] = m.value->score->weight.detach();
    w.extra_tensors["value_adapters.safetensors"] = value;
  } else {
    w.extra_tensors["value_model.safetensors"] = model_weights(*m.value);
  }
  save_checkpoint(folder, w);
}

void restore_ppo_checkpoint(const std::string& dir, Models& m, AdamW& policy_opt, AdamW& value_opt) {
  if (m.policy_lora) {  // the base stays the SFT policy's; the adapters continue
    m.policy_lora->load_peft_state(load_safetensors(join_path(dir, "adapter_model.safetensors")).tensors, dir);
    const TensorMap value = load_safetensors(join_path(dir, "value_adapters.safetensors")).tensors;
    m.value_lora->load_peft_state(value, dir);
    torch::NoGradGuard no_grad;
    m.value->score->weight.copy_(value.at("score.weight"));
  } else {
    load_weights(*m.policy, load_safetensors(join_path(dir, "model.safetensors")).tensors, dir);
    load_weights(*m.value, load_safetensors(join_path(dir, "value_model.safetensors")).tensors, dir);
  }
  TensorMap opt = load_safetensors(join_path(dir, "optimizer.safetensors")).tensors;
  TensorMap po, vo;
  for (auto& [k, t] : opt) (k.rfind("policy/", 0) == 0 ? po : vo)[k.substr(k.find('/') + 1)] = t;
  policy_opt.load_state(po, dir);
  value_opt.load_state(vo, dir);
}

}  // namespace

PpoResult run_ppo(const PpoConfig& cfg, const RewardFn& custom_reward, const DistInfo& dist,
                  const FreshPairsFn& feedback) {
  const auto& tc = cfg.train;
  const auto& rc = cfg.rollout;
  validate_ppo_config(cfg, dist.world_size);
  // Another starting policy, reference or adaptation would mix two runs. An
  // adaptive KL coefficient is state and continues; a fixed one is a
  // setting, so a resumed run uses the configured value.
  ResumeRules rules;
  rules.fixed = {"policy", "reward_model", "lora"};
  if (cfg.kl.adaptive) rules.carried = {"kl.coef"};
  TrainingRun run("ppo", cfg.out_dir, config_to_json(cfg), tc, rules, dist);

  Models m = load_models(cfg, static_cast<bool>(custom_reward), run.device());
  // Every model in one precision: policy and reference alike, so the KL starts at 0.
  set_compute_dtype(*m.policy, run.compute_dtype());
  set_compute_dtype(*m.reference, run.compute_dtype());
  set_compute_dtype(*m.value, run.compute_dtype());
  if (m.reward) set_compute_dtype(*m.reward, run.compute_dtype());
  const ChatTemplate chat(m.tokenizer);
  const std::vector<PromptItem> prompts = load_prompts(cfg.prompts, chat, m.system_prompt);

  std::vector<NamedParameter> policy_params = trainable_parameters(*m.policy, m.policy_lora.get()),
                              value_params = trainable_parameters(*m.value, m.value_lora.get());
  AdamWConfig oc;
  oc.weight_decay = 0.0;
  oc.beta2 = 0.999;
  AdamW policy_opt(policy_params, oc), value_opt(value_params, oc);
  ppo::KLController kl_ctl(cfg.kl.coef, cfg.kl.adaptive, cfg.kl.target, cfg.kl.horizon);
  EpochOrder order(static_cast<int64_t>(prompts.size()), mix_seed({static_cast<uint64_t>(tc.seed), 0x9090u}));

  // Validation set and the reference (SFT) replies, computed once.
  ValidationTracker validation(cfg.validation, chat, m.system_prompt, m.reference, m.reward ? &m.reward : nullptr,
                               dist.is_main());

  if (const auto& resume = run.resume()) {
    restore_ppo_checkpoint(resume->dir, m, policy_opt, value_opt);
    if (cfg.kl.adaptive) kl_ctl.set_value(resume->state.number("kl_coef", cfg.kl.coef));
    validation.restore(resume->state.extra);
  }
  const int64_t start = run.resume_step();
  log_info("ppo: ", prompts.size(), " prompts, ", rc.batch_size, " rollouts x ", tc.iterations, " iterations, ",
           tc.ppo_epochs, " epochs x ", tc.minibatches, " minibatches, KL ", cfg.kl.estimator, " coef ", kl_ctl.value(),
           cfg.kl.adaptive ? " (adaptive)" : "", ", ", run.threads(), " threads");

  auto save = [&](int64_t iteration, bool best) {
    run.commit(iteration, best, [&](const std::string& folder) {
      Json extra = {{"kl_coef", kl_ctl.value()}, {"system_prompt", m.system_prompt}};
      extra.update(validation.state());
      write_ppo_checkpoint(folder, m, policy_opt, value_opt, run.state(iteration, extra).to_json());
    });
  };

  // Each rank owns a contiguous shard of every iteration's rollouts.
  const int G = rc.batch_size, W = dist.world_size;
  const int local_n = G / W, row0 = dist.rank * local_n;
  std::vector<NamedParameter> all_params = policy_params;
  all_params.insert(all_params.end(), value_params.begin(), value_params.end());
  run.start(all_params, start);
  const PpoContext ctx{cfg, m, chat, prompts, custom_reward, dist, G, row0, local_n};
  for (int64_t it = start; it < tc.iterations; ++it) {
    const int64_t done = it + 1;
    PhaseTimer times;
    times.start("generation");
    std::vector<uint64_t> seeds;
    Rollout ro = collect_rollouts(ctx, order, it, &seeds);
    // 2. Scoring and advantages, 3. the PPO epochs.
    times.start("policy_logprobs");
    const double beta = kl_ctl.value();
    const std::vector<double> gold_scores = score_rollout(ctx, ro, beta, times);
    times.start("update");
    const double frac = tc.anneal_lr ? 1.0 - static_cast<double>(it) / static_cast<double>(tc.iterations) : 1.0;
    const TrainStats st = ppo_update(ctx, ro, it, frac, run.sync(), policy_opt, value_opt, policy_params, value_params);
    if (feedback && dist.is_main() && cfg.feedback.every > 0 && done % cfg.feedback.every == 0) {
      times.start("feedback");
      feedback(fresh_pairs(ctx, ro, seeds, done));
    }
    // 4. Metrics; the controller sees the KL that was penalised.
    times.start("statistics");
    double mean_kl = 0;
    Json row = iteration_metrics(ctx, ro, gold_scores, st, beta, tc.lr * frac, done, &mean_kl);
    kl_ctl.update(mean_kl, G);
    // 5. Validation (rank 0; the others wait) and checkpoints.
    validate_and_checkpoint(validation, m.policy, done, tc.iterations, beta, run, times,
                            [&](bool best) { save(done, best); });
    // The iteration's time by phase (rank 0's), then the line and the row.
    times.stop();
    row.update(times.metrics());
    run.log(row);
    log_info("ppo iter ", done, "/", tc.iterations, " | reward ", row["env/reward_mean"].get<double>(),
             row.contains("env/gold_mean") ? str_cat(" | gold ", row["env/gold_mean"].get<double>()) : std::string(),
             " | kl ", mean_kl, " | entropy ", row["objective/entropy"].get<double>(), " | clipfrac ",
             row["policy/clipfrac"].get<double>(), " | len ", row["reply/length"].get<double>(), " | ", times.summary());
  }

  run.finish();
  return online_result(cfg.out_dir, validation.history());
}

}  // namespace rlhf

#include "rollout/online.h"

#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "rollout/ppo_math.h"

namespace rlhf {

std::vector<PromptItem> load_prompts(const std::string& path, const ChatTemplate& chat, const std::string& system) {
  std::vector<PromptItem> out;
  read_jsonl(path, [&](const Json& obj, size_t line) {
    PromptItem p;
    p.conversation = prompt_from_json(obj, path, line, system);
    p.metadata = obj.value("metadata", Json());
    p.ids = chat.render_prompt(p.conversation);
    out.push_back(std::move(p));
  });
  if (out.empty()) fail(ErrorKind::kData, path, ": no prompts");
  return out;
}

PolicyWithReference load_policy_with_reference(const std::string& path, const LoraConfig& lora, uint64_t seed,
                                               torch::Device device) {
  PolicyWithReference m;
  LoadedPolicy policy = load_chat_policy(path, device);
  m.dir = policy.dir;
  m.policy = policy.model;
  m.tokenizer = policy.tokenizer;
  m.system_prompt = policy.trainer_state.value("system_prompt", "");
  if (lora.enabled) {
    m.lora = std::make_unique<LoraAdapters>(m.policy, lora, mix_seed({seed, 0x10a4u}));
    m.reference = GPT(m.policy->config());
    m.reference->to(device);
    share_weights(*m.reference, *m.policy);
  } else {
    m.reference = load_policy(m.dir, device).model;
  }
  for (auto& [n, p] : named_parameters(*m.reference)) p.set_requires_grad(false);
  // Dropout off (Huang et al. detail 9): eval mode still trains.
  m.policy->eval();
  m.reference->eval();
  return m;
}

LoadedRewardModel load_frozen_reward_model(const std::string& path, const PolicyWithReference& policy,
                                           torch::Device device) {
  LoadedRewardModel rm = load_reward_model(path);
  if (rm.tokenizer.fingerprint() != policy.tokenizer.fingerprint()) {
    fail(ErrorKind::kData, "the reward model ", rm.dir, " and the policy ", policy.dir,
         " use different tokenizers; train the reward model from this policy's SFT checkpoint");
  }
  rm.model->to(device);
  for (auto& [n, p] : named_parameters(*rm.model)) p.set_requires_grad(false);
  rm.model->eval();
  return rm;
}

std::string RewardConfig::describe() const {
  std::vector<std::string> parts;
  auto term = [&](double w, const char* name) {
    if (w <= 0) return;
    parts.push_back(w == 1.0 ? std::string(name) : str_cat(w, " x ", name));
  };
  term(model, "reward model");
  term(rubric, "rubric (programmatic; gold is then not an independent judge)");
  std::string out = parts.empty() ? std::string("nothing") : parts[0];
  for (size_t i = 1; i < parts.size(); ++i) out += " + " + parts[i];
  if (length_penalty > 0) out += str_cat(" - ", length_penalty, " per token beyond ", length_target);
  return out;
}

SampledReplies sample_replies(GPT& policy, const std::vector<std::vector<int32_t>>& prompts, int64_t k,
                              const SamplingConfig& sampling, int generation_batch, const ChatTemplate& chat,
                              const std::vector<uint64_t>& row_seeds) {
  RLHF_CHECK(row_seeds.size() == prompts.size() * static_cast<size_t>(k), "one seed per sampled row");
  const torch::Device device = policy->transformer->wte->weight.device();
  const size_t per_chunk = static_cast<size_t>(std::max<int64_t>(1, generation_batch / k));
  std::vector<torch::Tensor> tokens, lengths, finished;
  for (size_t c0 = 0; c0 < prompts.size(); c0 += per_chunk) {
    const size_t c1 = std::min(prompts.size(), c0 + per_chunk);
    const Generation g = generate_samples(policy, {prompts.begin() + c0, prompts.begin() + c1}, k, sampling,
                                          chat.stop_tokens(), chat.pad_id(),
                                          {row_seeds.begin() + c0 * k, row_seeds.begin() + c1 * k});
    tokens.push_back(g.tokens);
    lengths.push_back(g.lengths);
    finished.push_back(g.finished);
  }
  SampledReplies out;
  const PromptBatch q =
      left_pad_prompts(prompts, prompt_budget(policy->config(), sampling.max_new_tokens), chat.pad_id(), device);
  out.query_ids = k > 1 ? q.ids.repeat_interleave(k, 0) : q.ids;
  out.query_mask = k > 1 ? q.mask.repeat_interleave(k, 0) : q.mask;
  out.response_ids = torch::cat(tokens, 0);
  out.response_mask = ppo::response_mask(out.response_ids, chat.stop_tokens());
  out.finished = torch::cat(finished, 0);
  out.lengths = torch::cat(lengths, 0);
  return out;
}

std::vector<double> rubric_scores(const SampledReplies& replies, const std::vector<const PromptItem*>& items,
                                  const ChatTemplate& chat) {
  const int64_t B = replies.response_ids.size(0);
  RLHF_CHECK(static_cast<int64_t>(items.size()) == B, "one prompt per scored row");
  std::vector<double> out;
  const std::vector<ChatReply> decoded = decode_replies(chat, replies.response_ids, replies.lengths, replies.finished);
  for (int64_t i = 0; i < B; ++i) {
    const ChatReply& r = decoded[static_cast<size_t>(i)];
    out.push_back(gold_of(items[i]->metadata, items[i]->conversation, r.text, r.finished));
  }
  return out;
}

ReplyScores score_replies(const RewardConfig& config, ScalarHeadModel* reward_model, const SampledReplies& replies,
                          const std::vector<const PromptItem*>& items, const ChatTemplate& chat) {
  torch::NoGradGuard no_grad;
  const int64_t B = replies.response_ids.size(0);
  ReplyScores out;
  const torch::Device device = replies.response_ids.device();
  out.gold = rubric_scores(replies, items, chat);
  out.raw = torch::zeros({B}, torch::TensorOptions().dtype(torch::kFloat).device(device));
  if (config.model > 0) {
    RLHF_CHECK(reward_model != nullptr, "reward.model > 0 needs a reward model");
    ScalarHeadModel& rm = *reward_model;
    out.raw += config.model * rm->normalized(rm->forward(replies.full_ids(), replies.full_mask()));
  }
  if (config.rubric > 0) {
    std::vector<float> rubric;
    for (int64_t i = 0; i < B; ++i) {
      if (std::isnan(out.gold[i])) {
        fail(ErrorKind::kData, "reward.rubric is set but a prompt has no facts (\"metadata\" with an \"intent\"): \"",
             items[i]->conversation.empty() ? std::string() : items[i]->conversation.back().content,
             "\"; use prompts with facts or set reward.rubric = 0");
      }
      rubric.push_back(static_cast<float>(out.gold[i]));
    }
    out.raw += config.rubric * torch::tensor(rubric).to(device);
  }
  out.scores = ppo::apply_missing_eos_penalty(out.raw, replies.finished, config.missing_eos_penalty);
  if (config.length_penalty > 0) {
    const torch::Tensor over = (replies.lengths - config.length_target).clamp_min(0).to(torch::kFloat);
    out.scores = out.scores - config.length_penalty * over;
  }
  return out;
}

std::vector<std::vector<int64_t>> local_minibatches(int rows, int minibatches, uint64_t shuffle_seed, int row0,
                                                    int local_n) {
  std::vector<int64_t> perm(static_cast<size_t>(rows));
  for (int i = 0; i < rows; ++i) perm[i] = i;
  SplitMix rng(shuffle_seed);
  for (int i = rows - 1; i > 0; --i) std::swap(perm[i], perm[rng.below(static_cast<uint64_t>(i + 1))]);
  const int size = rows / minibatches;
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(minibatches));
  for (int mb = 0; mb < minibatches; ++mb) {
    for (int j = mb * size; j < (mb + 1) * size; ++j) {
      if (perm[j] >= row0 && perm[j] < row0 + local_n) out[mb].push_back(perm[j] - row0);
    }
  }
  return out;
}

double response_tokens(const torch::Tensor& response_mask, const std::vector<int64_t>& rows) {
  if (rows.empty()) return 0.0;
  const torch::Tensor index = torch::tensor(rows).to(response_mask.device());
  return response_mask.index_select(0, index).sum().item<double>();
}

void for_each_micro_batch(const std::vector<int64_t>& local, int micro_batch, GradientSync& sync,
                          torch::Device device, const std::function<void(const torch::Tensor& indices)>& step) {
  const int64_t count = static_cast<int64_t>(local.size());
  if (count == 0) sync.arm();
  const torch::Tensor all =
      torch::tensor(local.empty() ? std::vector<int64_t>{0} : local).narrow(0, 0, count).to(device);
  for (int64_t s = 0; s < count; s += micro_batch) {
    if (s + micro_batch >= count) sync.arm();
    step(all.narrow(0, s, std::min<int64_t>(micro_batch, count - s)));
  }
  sync.finish();
}

void validate_and_checkpoint(ValidationTracker& validation, GPT& policy, int64_t done, int64_t total, double kl_coef,
                             TrainingRun& run, PhaseTimer& times, const std::function<void(bool best)>& save) {
  bool best = false;
  if (validation.due(done, total)) {
    times.start("validation");
    if (run.dist().is_main()) best = validation.validate(policy, done, kl_coef, run);
    barrier(run.dist());
  }
  if (best || run.checkpoint_due(done, total)) {
    times.start("checkpoint");
    save(best);
  }
}

OnlineResult online_result(const std::string& out_dir, const std::vector<ValidationResult>& validations) {
  OnlineResult r;
  r.checkpoint = resolve_checkpoint(out_dir);
  r.best_checkpoint = resolve_checkpoint(out_dir, /*prefer_best=*/true);
  r.validations = validations;
  return r;
}

ValidationTracker::ValidationTracker(const ValidationConfig& config, const ChatTemplate& chat,
                                     const std::string& system_prompt, GPT& reference, ScalarHeadModel* reward_model,
                                     bool is_main)
    : config_(config),
      chat_(chat),
      reference_(reference),
      enabled_(reward_model != nullptr && !config.prompts.empty()),
      best_objective_(-std::numeric_limits<double>::infinity()) {
  if (reward_model != nullptr) reward_model_ = *reward_model;
  if (!enabled_ || !is_main) return;
  prompts_ = load_validation_prompts(config, chat, system_prompt);
  reference_replies_ = validation_replies(reference_, reference_, reward_model_, chat, prompts_, config);
  last_replies_ = reference_replies_;
  history_.push_back(summarise(reference_replies_, 0));
}

bool ValidationTracker::due(int64_t done, int64_t total) const {
  return enabled_ && ((config_.interval > 0 && done % config_.interval == 0) || done == total);
}

bool ValidationTracker::validate(GPT& policy, int64_t done, double kl_coef, TrainingRun& run) {
  last_replies_ = validation_replies(policy, reference_, reward_model_, chat_, prompts_, config_);
  const ValidationResult v = summarise(last_replies_, done);
  history_.push_back(v);
  const bool best = v.objective(kl_coef) > best_objective_;
  if (best) best_objective_ = v.objective(kl_coef);
  log_info(run.stage(), " validation iter ", done, " | reward ", v.reward,
           v.has_gold ? str_cat(" | gold ", v.gold) : std::string(), " | kl ", v.kl, " | length ", v.length,
           best ? " (best)" : "");
  Json row = {{"step", done}, {"validation/reward", v.reward}, {"validation/kl", v.kl}, {"validation/length", v.length}};
  if (v.has_gold) row["validation/gold"] = v.gold;
  run.log(row);
  write_file_atomic(run.dir().file("validation.md"),
                    validation_report(history_, prompts_, reference_replies_, last_replies_, config_.samples));
  return best;
}

Json ValidationTracker::state() const {
  Json validations = Json::array();
  for (const auto& v : history_) validations.push_back(v.to_json());
  Json best = std::isfinite(best_objective_) ? Json(best_objective_) : Json(nullptr);
  return {{"best_objective", best}, {"validations", validations}};
}

void ValidationTracker::restore(const Json& state) {
  if (state.contains("best_objective") && state["best_objective"].is_number()) best_objective_ = state["best_objective"];
  if (!state.contains("validations")) return;
  history_.clear();
  for (const auto& v : state["validations"]) history_.push_back(ValidationResult::from_json(v));
}

}  // namespace rlhf

#include "reward/rm_train.h"

#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "support/rubric.h"
#include "train/data_order.h"
#include "train/distributed.h"
#include "train/progress.h"
#include "train/training_run.h"

namespace rlhf {
namespace {

constexpr int kScoringBatch = 32;  // sequences per forward pass when scoring without gradients

struct Start {
  ScalarHeadModel model{nullptr};
  Tokenizer tokenizer;
};

// From a reward model (continue training) or a policy (new head).
Start initial_model(const std::string& path, uint64_t seed) {
  const std::string dir = resolve_checkpoint(path, /*prefer_best=*/true);
  const Json config = read_json_file(join_path(dir, "config.json"));
  Start s;
  if (config.contains("num_labels")) {
    LoadedRewardModel rm = load_reward_model(dir);
    s.model = rm.model;
    s.tokenizer = rm.tokenizer;
    log_info("rm: continuing the reward model in ", dir);
  } else {
    LoadedPolicy p = load_policy(dir);
    prepare_chat_tokenizer(p.tokenizer);
    if (p.tokenizer.vocab_size() > p.model->config().vocab_size) p.model->resize_vocab(p.tokenizer.vocab_size());
    s.model = reward_model_from_policy(p, seed);
    s.tokenizer = p.tokenizer;
  }
  return s;
}

}  // namespace

Json RewardEval::to_json() const {
  return Json{{"pairs", pairs}, {"label_accuracy", label_accuracy}, {"gold_pairs", gold_pairs},
              {"gold_accuracy", gold_accuracy}, {"mean_margin", mean_margin}};
}

std::vector<double> score_replies(ScalarHeadModel& model, const ChatTemplate& chat,
                                  const std::vector<const Conversation*>& prompts,
                                  const std::vector<const std::string*>& replies, int batch_size,
                                  torch::Device device, const std::vector<bool>& finished, bool share_prompts,
                                  torch::Tensor* features) {
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  std::vector<double> out;
  std::vector<torch::Tensor> feature_rows;
  const int64_t ctx = model->config().n_positions;
  for (size_t i = 0; i < prompts.size(); i += static_cast<size_t>(batch_size)) {
    const size_t end = std::min(prompts.size(), i + batch_size);
    std::vector<const Conversation*> p(prompts.begin() + i, prompts.begin() + end);
    std::vector<const std::string*> r(replies.begin() + i, replies.begin() + end);
    std::vector<bool> f;
    if (!finished.empty()) f.assign(finished.begin() + i, finished.begin() + end);
    torch::Tensor h;
    std::optional<SharedPromptBatch> shared;
    if (share_prompts) shared = shared_prompt_batch(chat, p, r, ctx, f);
    if (shared) {
      h = model->features_shared(shared->to(device));
    } else {
      ScoringBatch b = reward_batch(chat, p, r, ctx, f);
      h = model->features(b.input_ids.to(device), b.attention_mask.to(device), /*right_padded=*/true);
    }
    const torch::Tensor s = model->score(h).squeeze(-1).to(torch::kCPU).to(torch::kDouble).contiguous();
    out.insert(out.end(), s.data_ptr<double>(), s.data_ptr<double>() + s.numel());
    if (features) feature_rows.push_back(h.to(torch::kCPU));
  }
  model->train(was_training);
  if (features) *features = feature_rows.empty() ? torch::empty({0, model->config().n_embd}) : torch::cat(feature_rows);
  return out;
}

RewardEval evaluate_reward_model(ScalarHeadModel& model, const ChatTemplate& chat,
                                 const std::vector<PreferencePair>& pairs, int batch_size, torch::Device device,
                                 std::vector<Json>* per_pair, bool share_prompts) {
  std::vector<const Conversation*> prompts;
  std::vector<const std::string*> replies;
  std::vector<bool> finished;
  std::vector<size_t> row(2 * pairs.size());  // per pair: chosen's and rejected's row in the scored list
  // With sharing, each distinct (prompt, reply, finished) is scored once: a
  // reply appears in up to 15 of its prompt's pairs.
  std::map<std::tuple<std::string, std::string, bool>, size_t> seen;
  const Conversation* last_prompt = nullptr;
  std::string prompt_key;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const PreferencePair& p = pairs[i];
    if (share_prompts && &p.prompt != last_prompt) {
      prompt_key = conversation_to_json(p.prompt).dump();
      last_prompt = &p.prompt;
    }
    const std::pair<const std::string*, bool> both[2] = {{&p.chosen, p.chosen_finished},
                                                         {&p.rejected, p.rejected_finished}};
    for (int k = 0; k < 2; ++k) {
      const auto [reply, done] = both[k];
      if (share_prompts) {
        const auto [it, added] = seen.emplace(std::make_tuple(prompt_key, *reply, done), replies.size());
        row[2 * i + k] = it->second;
        if (!added) continue;
      } else {
        row[2 * i + k] = replies.size();
      }
      prompts.push_back(&p.prompt);
      replies.push_back(reply);
      finished.push_back(done);
    }
  }
  const std::vector<double> scored =
      score_replies(model, chat, prompts, replies, batch_size, device, finished, share_prompts);
  std::vector<double> s(row.size());
  for (size_t j = 0; j < row.size(); ++j) s[j] = scored[row[j]];
  RewardEval e;
  size_t right = 0, gold_right = 0;
  double margin = 0;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const double d = s[2 * i] - s[2 * i + 1];
    const PreferencePair& p = pairs[i];
    if (!p.tie) {
      ++e.pairs;
      right += d > 0;
      margin += d;
    }
    const support::CaseFacts facts = support::facts_from_metadata(p.metadata);
    Json record;
    if (per_pair != nullptr) {
      record = Json{{"prompt", p.prompt.empty() ? std::string() : p.prompt.back().content}, {"chosen", p.chosen},
                    {"rejected", p.rejected}, {"tie", p.tie}, {"reward_chosen", s[2 * i]},
                    {"reward_rejected", s[2 * i + 1]}};
    }
    if (!facts.intent.empty()) {
      const support::GoldScore gc = support::gold_score(facts, p.chosen, p.chosen_finished);
      const support::GoldScore gr = support::gold_score(facts, p.rejected, p.rejected_finished);
      if (gc.total != gr.total) {
        ++e.gold_pairs;
        gold_right += (d > 0) == (gc.total > gr.total);
      }
      if (per_pair != nullptr) {
        record["gold_chosen"] = gc.to_json();
        record["gold_rejected"] = gr.to_json();
        record["intent"] = facts.intent;
      }
    }
    if (per_pair != nullptr) per_pair->push_back(std::move(record));
  }
  e.label_accuracy = e.pairs ? static_cast<double>(right) / e.pairs : 0;
  e.mean_margin = e.pairs ? margin / e.pairs : 0;
  e.gold_accuracy = e.gold_pairs ? static_cast<double>(gold_right) / e.gold_pairs : 0;
  return e;
}

PairBatch pair_batch(const std::vector<PreferencePair>& pairs, const std::vector<const std::vector<size_t>*>& groups) {
  PairBatch b;
  for (const std::vector<size_t>* group : groups) {
    std::map<std::pair<std::string, bool>, int64_t> seen;  // (reply, finished) -> index, within this prompt
    auto index_of = [&](const PreferencePair& p, const std::string& reply, bool finished) {
      const auto [it, added] = seen.emplace(std::make_pair(reply, finished), static_cast<int64_t>(b.replies.size()));
      if (added) {
        b.prompts.push_back(&p.prompt);
        b.replies.push_back(&reply);
        b.finished.push_back(finished);
      }
      return it->second;
    };
    for (size_t i : *group) {
      const PreferencePair& p = pairs[i];
      b.chosen.push_back(index_of(p, p.chosen, p.chosen_finished));
      b.rejected.push_back(index_of(p, p.rejected, p.rejected_finished));
      b.margin.push_back(static_cast<float>(p.margin));
      b.tie.push_back(p.tie ? 1.0f : 0.0f);
      b.weight.push_back(static_cast<float>(p.weight));
    }
  }
  return b;
}

torch::Tensor pair_batch_rewards(ScalarHeadModel& model, const ChatTemplate& chat, const PairBatch& batch,
                                 torch::Device device, bool share_prompts) {
  const int64_t ctx = model->config().n_positions;
  if (share_prompts) {
    if (auto shared = shared_prompt_batch(chat, batch.prompts, batch.replies, ctx, batch.finished)) {
      return model->forward_shared(shared->to(device));
    }
  }
  const ScoringBatch sb = reward_batch(chat, batch.prompts, batch.replies, ctx, batch.finished);
  return model->forward(sb.input_ids.to(device), sb.attention_mask.to(device), /*right_padded=*/true);
}

torch::Tensor pair_batch_losses(const PairBatch& batch, const torch::Tensor& rewards, double label_noise) {
  const torch::Device device = rewards.device();
  torch::Tensor rc = rewards.index_select(0, torch::tensor(batch.chosen).to(device));
  torch::Tensor rr = rewards.index_select(0, torch::tensor(batch.rejected).to(device));
  return bradley_terry_per_pair(rc, rr, torch::tensor(batch.margin).to(device), torch::tensor(batch.tie).to(device),
                                label_noise);
}

RewardTrainResult run_reward_training(const RewardTrainConfig& cfg, const std::vector<PreferencePair>& train,
                                      const std::vector<PreferencePair>& eval, int64_t last_label_id,
                                      const DistInfo& dist) {
  const auto& tc = cfg.train;
  if (train.empty()) fail(ErrorKind::kData, "no training pairs: label some comparisons first (rlhf label)");
  // A finished reward model trains afresh when started again (on the labels
  // of now); an unfinished one resumes on the same data.
  ResumeRules rules;
  rules.fixed = {"data"};
  rules.restart_finished = true;
  TrainingRun run("rm", cfg.out_dir, config_to_json(cfg), tc, rules, dist);
  const torch::Device device = run.device();

  Start start = initial_model(cfg.init_from, mix_seed({static_cast<uint64_t>(tc.seed), 0x4ead}));
  ScalarHeadModel model = start.model;
  model->to(device);
  model->train();
  set_compute_dtype(*model, run.compute_dtype());
  const ChatTemplate chat(start.tokenizer);
  const std::vector<NamedParameter> params = apply_freeze(*model, model->config().n_layer, cfg.freeze);
  AdamW optimizer(params, cfg.optim);

  // A step trains on `global_batch` prompts with all their labelled pairs;
  // each distinct reply is scored once (group_by_prompt).
  const std::vector<std::vector<size_t>> groups = group_by_prompt(train);
  const int64_t global_batch = static_cast<int64_t>(tc.batch_size) * tc.grad_accum * dist.world_size;
  const int64_t total_steps =
      std::max<int64_t>(1, static_cast<int64_t>(std::ceil(tc.epochs * groups.size() / global_batch)));
  EpochOrder order(static_cast<int64_t>(groups.size()), mix_seed({static_cast<uint64_t>(tc.seed), 0x0de5u}));
  log_info("rm: ", train.size(), " training pairs on ", groups.size(), " prompts, ", eval.size(),
           " held-out pairs, ", total_steps, " steps of ", global_batch, " prompts, ", run.threads(), " threads");

  if (const auto& resume = run.resume()) {
    load_weights(*model, load_safetensors(join_path(resume->dir, "model.safetensors")).tensors, resume->dir);
    optimizer.load_state(load_safetensors(join_path(resume->dir, "optimizer.safetensors")).tensors, resume->dir);
  }
  run.start(params, run.resume_step());

  // The final save (`done`) is the finished, normalised model: marked best,
  // without optimiser state.
  auto save = [&](int64_t step, bool done, const RewardEval& e) {
    run.commit(step, /*best=*/done, [&](const std::string& folder) {
      CheckpointWrite w;
      w.weights = model_weights(*model);
      w.hf_config = reward_config_to_hf(*model, chat.pad_id());
      w.tokenizer = &start.tokenizer;
      w.trainer_state = run.state(step, {{"eval", e.to_json()}, {"last_label_id", last_label_id},
                                         {"train_pairs", train.size()}}, /*finished=*/done)
                            .to_json();
      if (!done) w.optimizer_state = optimizer.state();
      save_checkpoint(folder, w);
    });
  };

  ProgressMeter progress("rm", total_steps, tc.log_interval);
  for (int64_t step = run.resume_step(); step < total_steps; ++step) {
    double step_weight = 0;
    for (int64_t k = step * global_batch; k < (step + 1) * global_batch; ++k) {
      for (size_t i : groups[order.at(k)]) step_weight += train[i].weight;
    }
    double step_loss = 0, step_acc = 0;
    for (int m = 0; m < tc.grad_accum; ++m) {
      std::vector<const std::vector<size_t>*> micro;
      for (int64_t k : micro_batch_samples(step, m, tc.batch_size, tc.grad_accum, dist.rank, dist.world_size)) {
        micro.push_back(&groups[order.at(k)]);
      }
      const PairBatch batch = pair_batch(train, micro);
      const torch::Tensor r = pair_batch_rewards(model, chat, batch, device, tc.share_prompts);
      torch::Tensor per_pair = pair_batch_losses(batch, r, tc.label_noise);
      const torch::Tensor rd = r.detach();
      const torch::Tensor rc = rd.index_select(0, torch::tensor(batch.chosen).to(device));
      const torch::Tensor rr = rd.index_select(0, torch::tensor(batch.rejected).to(device));
      torch::Tensor w = torch::tensor(batch.weight).to(device);
      torch::Tensor loss = (per_pair * w).sum() / step_weight;  // this rank's share; gradients are summed
      if (m == tc.grad_accum - 1) run.sync().arm();
      loss.backward();
      step_loss += loss.item<double>();
      step_acc += (rc > rr).to(torch::kFloat).mean().item<double>() / tc.grad_accum;
    }
    const auto [grad_norm, lr] = run.finish_step(optimizer, cfg.schedule, step, total_steps, tc.grad_clip);
    step_loss = all_reduce_sum(dist, step_loss);
    step_acc = all_reduce_sum(dist, step_acc) / dist.world_size;
    const int64_t done = step + 1;

    run.log({{"step", done}, {"loss/train", step_loss}, {"accuracy/train", step_acc}, {"lr", lr},
                     {"grad_norm", grad_norm}});
    progress.step_done(done, step_loss, lr, static_cast<double>(global_batch), "prompts");
    if (tc.eval_interval > 0 && done % tc.eval_interval == 0 && done != total_steps && !eval.empty()) {
      const RewardEval e = evaluate_reward_model(model, chat, eval, kScoringBatch, device, nullptr, tc.share_prompts);
      log_info("eval step ", done, " | accuracy vs labels ", e.label_accuracy, " | vs gold ", e.gold_accuracy);
      run.log({{"step", done}, {"accuracy/eval_labels", e.label_accuracy}, {"accuracy/eval_gold", e.gold_accuracy}});
      save(done, false, e);
      progress.pause_done();
    } else if (done != total_steps && run.checkpoint_due(done, total_steps)) {
      save(done, false, RewardEval{});
      progress.pause_done();
    }
  }

  // Normalise on the SFT policy's replies: every distinct reply in the
  // training pairs (they were sampled from it).
  {
    std::vector<const Conversation*> prompts;
    std::vector<const std::string*> replies;
    std::vector<bool> finished;
    std::set<std::string> seen;
    for (const auto& p : train) {
      for (const auto& [r, f] : {std::make_pair(&p.chosen, p.chosen_finished), std::make_pair(&p.rejected, p.rejected_finished)}) {
        if (seen.insert(*r).second && prompts.size() < 4000) {
          prompts.push_back(&p.prompt);
          replies.push_back(r);
          finished.push_back(f);
        }
      }
    }
    model->gain = 1.0;
    model->bias = 0.0;
    const std::vector<double> s =
        score_replies(model, chat, prompts, replies, kScoringBatch, device, finished, tc.share_prompts);
    double mean = 0, var = 0;
    for (double x : s) mean += x / s.size();
    for (double x : s) var += (x - mean) * (x - mean) / s.size();
    const double sd = std::sqrt(std::max(var, 1e-12));
    model->gain = 1.0 / sd;
    model->bias = -mean / sd;
    log_info("rm: normalised on ", s.size(), " SFT replies (raw mean ", mean, ", sd ", sd, ")");
  }

  RewardTrainResult result;
  if (!eval.empty()) {
    result.eval = evaluate_reward_model(model, chat, eval, kScoringBatch, device, nullptr, tc.share_prompts);
  }
  log_info("rm: held-out accuracy vs labels ", result.eval.label_accuracy, " on ", result.eval.pairs,
           " pairs; vs gold ", result.eval.gold_accuracy, " on ", result.eval.gold_pairs, " pairs");
  run.log({{"step", total_steps}, {"accuracy/eval_labels", result.eval.label_accuracy},
                   {"accuracy/eval_gold", result.eval.gold_accuracy}});
  save(total_steps, true, result.eval);
  run.finish();
  result.checkpoint = resolve_checkpoint(cfg.out_dir, true);
  result.last_label_id = last_label_id;
  return result;
}

}  // namespace rlhf

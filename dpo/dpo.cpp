#include "dpo/dpo.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <memory>
#include <unordered_map>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "dpo/dpo_loss.h"
#include "policy/checkpoint.h"
#include "train/data_order.h"
#include "train/progress.h"
#include "train/training_run.h"
#include "train/safetensors.h"

namespace rlhf {

Json DpoStats::to_json(const std::string& prefix) const {
  return {{prefix + "loss", loss}, {prefix + "rewards/accuracies", accuracy},
          {prefix + "rewards/chosen", chosen_reward}, {prefix + "rewards/rejected", rejected_reward},
          {prefix + "rewards/margins", margin}, {prefix + "logps/chosen", chosen_logp},
          {prefix + "logps/rejected", rejected_logp}};
}

torch::Tensor reply_logprobs(GPT& model, const ChatTemplate& chat, const std::vector<const Conversation*>& prompts,
                             const std::vector<const std::string*>& replies, const std::vector<bool>& finished,
                             bool mean, torch::Device device, torch::Tensor* tokens) {
  RLHF_CHECK(prompts.size() == replies.size() && prompts.size() == finished.size());
  const int64_t n = static_cast<int64_t>(prompts.size());
  const int64_t ctx = model->config().n_positions;
  std::vector<std::vector<int32_t>> seqs(prompts.size());
  std::vector<int64_t> reply_start(prompts.size());
  int64_t longest = 1;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> prompt = chat.render_prompt(*prompts[i]);
    std::vector<int32_t> reply = chat.tokenizer().encode(*replies[i]);
    if (finished[i]) reply.push_back(chat.end_of_turn());
    if (static_cast<int64_t>(reply.size()) > ctx - 1) reply.resize(static_cast<size_t>(ctx - 1));
    const auto keep = static_cast<size_t>(std::max<int64_t>(1, ctx - static_cast<int64_t>(reply.size())));
    if (prompt.size() > keep) prompt.erase(prompt.begin(), prompt.end() - static_cast<long>(keep));
    reply_start[i] = static_cast<int64_t>(prompt.size());
    seqs[i] = prompt;
    seqs[i].insert(seqs[i].end(), reply.begin(), reply.end());
    longest = std::max<int64_t>(longest, static_cast<int64_t>(seqs[i].size()));
  }
  // Right padding: the causal mask alone keeps it away from real tokens.
  torch::Tensor ids = torch::full({n, longest}, chat.pad_id(), torch::kLong);
  torch::Tensor targets = torch::zeros({n, longest}, torch::kLong);
  torch::Tensor mask = torch::zeros({n, longest}, torch::kFloat);
  auto ia = ids.accessor<int64_t, 2>(), ta = targets.accessor<int64_t, 2>();
  auto ma = mask.accessor<float, 2>();
  for (int64_t i = 0; i < n; ++i) {
    const auto& s = seqs[static_cast<size_t>(i)];
    for (size_t t = 0; t < s.size(); ++t) ia[i][static_cast<int64_t>(t)] = s[t];
    // Position t predicts token t + 1: the reply's tokens are predicted from reply_start - 1 on.
    for (int64_t t = reply_start[static_cast<size_t>(i)] - 1; t + 1 < static_cast<int64_t>(s.size()); ++t) {
      ta[i][t] = s[static_cast<size_t>(t + 1)];
      ma[i][t] = 1;
    }
  }
  mask = mask.to(device);
  const torch::Tensor logits = model->forward(ids.to(device));
  const torch::Tensor logp =
      torch::log_softmax(logits.to(torch::kFloat), -1).gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1);
  const torch::Tensor sum = (logp * mask).sum(1);
  if (tokens != nullptr) *tokens = mask.sum(1);
  return mean ? sum / mask.sum(1).clamp_min(1) : sum;
}

namespace {

// The policy's log-probs of a micro-batch's chosen and rejected replies (one
// forward pass over both), and the chosen replies' token counts.
struct PairLogprobs {
  torch::Tensor chosen, rejected, chosen_tokens;
};
PairLogprobs pair_logprobs(GPT& model, const ChatTemplate& chat, const std::vector<const PreferencePair*>& pairs,
                           bool mean, torch::Device device) {
  std::vector<const Conversation*> prompts;
  std::vector<const std::string*> replies;
  std::vector<bool> finished;
  for (int side = 0; side < 2; ++side) {
    for (const PreferencePair* p : pairs) {
      prompts.push_back(&p->prompt);
      replies.push_back(side == 0 ? &p->chosen : &p->rejected);
      finished.push_back(side == 0 ? p->chosen_finished : p->rejected_finished);
    }
  }
  torch::Tensor tokens;
  const torch::Tensor lp = reply_logprobs(model, chat, prompts, replies, finished, mean, device, &tokens);
  const auto P = static_cast<int64_t>(pairs.size());
  // With `mean` the log-probs are per token already.
  return {lp.narrow(0, 0, P), lp.narrow(0, P, P), mean ? torch::ones({P}) : tokens.narrow(0, 0, P)};
}

// The reference's log-probs of every chosen and rejected reply [2, N]. A
// reply compared several times (K replies make C(K,2) pairs) is scored once.
torch::Tensor reference_logprobs(GPT& model, const ChatTemplate& chat, const std::vector<PreferencePair>& pairs,
                                 bool mean, int batch, torch::Device device) {
  torch::NoGradGuard no_grad;
  std::unordered_map<std::string, int64_t> index_of;
  std::vector<const Conversation*> prompts;
  std::vector<const std::string*> replies;
  std::vector<bool> finished;
  std::vector<int64_t> slot(2 * pairs.size());
  for (int side = 0; side < 2; ++side) {
    for (size_t i = 0; i < pairs.size(); ++i) {
      const PreferencePair& p = pairs[i];
      const std::string& reply = side == 0 ? p.chosen : p.rejected;
      const bool done = side == 0 ? p.chosen_finished : p.rejected_finished;
      const std::string key = conversation_to_json(p.prompt).dump() + '\x1f' + reply + (done ? "1" : "0");
      auto [it, fresh] = index_of.emplace(key, static_cast<int64_t>(replies.size()));
      if (fresh) {
        prompts.push_back(&p.prompt);
        replies.push_back(&reply);
        finished.push_back(done);
      }
      slot[side * pairs.size() + i] = it->second;
    }
  }
  if (pairs.empty()) return torch::zeros({2, 0});
  std::vector<torch::Tensor> parts;
  for (size_t i = 0; i < replies.size(); i += static_cast<size_t>(batch)) {
    const size_t end = std::min(replies.size(), i + static_cast<size_t>(batch));
    parts.push_back(reply_logprobs(model, chat, {prompts.begin() + static_cast<long>(i), prompts.begin() + static_cast<long>(end)},
                                   {replies.begin() + static_cast<long>(i), replies.begin() + static_cast<long>(end)},
                                   {finished.begin() + static_cast<long>(i), finished.begin() + static_cast<long>(end)},
                                   mean, device)
                        .cpu());
  }
  log_info("dpo: ", replies.size(), " distinct replies in ", pairs.size(), " pairs");
  const torch::Tensor distinct = torch::cat(parts);
  return distinct.index_select(0, torch::tensor(slot, torch::kLong)).view({2, static_cast<int64_t>(pairs.size())});
}

struct Objective {
  DpoLossType type;
  double beta, label_smoothing, rpo_alpha;
  bool mean;
};

// Loss terms of some pairs, with their reference log-probs ([2, N] columns).
DpoTerms pair_terms(const PairLogprobs& lp, const torch::Tensor& reference, const std::vector<int64_t>& index,
                    const std::vector<const PreferencePair*>& pairs, const Objective& o) {
  const torch::Device device = lp.chosen.device();
  const torch::Tensor idx = torch::tensor(index, torch::kLong);
  const torch::Tensor ref = reference.index_select(1, idx).to(device);
  std::vector<uint8_t> ties;
  for (const PreferencePair* p : pairs) ties.push_back(p->tie ? 1 : 0);
  const torch::Tensor tie = torch::tensor(ties, torch::kUInt8).to(torch::kBool).to(device);
  DpoTerms t = dpo_loss(lp.chosen, lp.rejected, ref[0], ref[1], tie, o.beta, o.type, o.label_smoothing);
  if (o.rpo_alpha > 0) t.losses = t.losses + o.rpo_alpha * chosen_nll(lp.chosen, lp.chosen_tokens.to(device), tie);
  return t;
}

void accumulate(DpoStats& s, const DpoTerms& t, const torch::Tensor& chosen_logp, const torch::Tensor& rejected_logp,
                const std::vector<const PreferencePair*>& pairs) {
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto k = static_cast<int64_t>(i);
    const double rc = t.chosen_rewards[k].item<double>(), rr = t.rejected_rewards[k].item<double>();
    s.pairs += 1;
    s.loss += t.losses[k].item<double>();
    s.accuracy += pairs[i]->tie ? 0.5 : (rc > rr ? 1.0 : 0.0);
    s.chosen_reward += rc;
    s.rejected_reward += rr;
    s.margin += rc - rr;
    s.chosen_logp += chosen_logp[k].item<double>();
    s.rejected_logp += rejected_logp[k].item<double>();
  }
}

DpoStats averaged(DpoStats s) {
  const double n = std::max(1.0, s.pairs);
  for (double* v : {&s.loss, &s.accuracy, &s.chosen_reward, &s.rejected_reward, &s.margin, &s.chosen_logp,
                    &s.rejected_logp}) {
    *v /= n;
  }
  return s;
}

DpoStats evaluate(GPT& model, const ChatTemplate& chat, const std::vector<PreferencePair>& pairs,
                  const torch::Tensor& reference, const Objective& o, int batch, torch::Device device) {
  torch::NoGradGuard no_grad;
  DpoStats s;
  for (size_t i = 0; i < pairs.size(); i += static_cast<size_t>(batch)) {
    std::vector<const PreferencePair*> b;
    std::vector<int64_t> index;
    for (size_t k = i; k < std::min(pairs.size(), i + static_cast<size_t>(batch)); ++k) {
      b.push_back(&pairs[k]);
      index.push_back(static_cast<int64_t>(k));
    }
    const PairLogprobs lp = pair_logprobs(model, chat, b, o.mean, device);
    accumulate(s, pair_terms(lp, reference, index, b, o), lp.chosen, lp.rejected, b);
  }
  return averaged(s);
}

}  // namespace

void validate_dpo_config(const DpoConfig& cfg) {
  parse_dpo_loss_type(cfg.dpo.loss_type);
  parse_pair_selection(cfg.data.pairs);
}

DpoResult run_dpo(const DpoConfig& cfg, const std::vector<PreferencePair>& labelled,
                  const std::vector<PreferencePair>& eval, int64_t last_label_id, const DistInfo& dist) {
  const auto& tc = cfg.train;
  validate_dpo_config(cfg);
  const DpoLossType loss_type = parse_dpo_loss_type(cfg.dpo.loss_type);
  const Objective objective{loss_type, cfg.dpo.beta, cfg.dpo.label_smoothing, cfg.dpo.rpo_alpha,
                            dpo_uses_mean_logprobs(loss_type)};
  if (labelled.empty()) fail(ErrorKind::kData, "dpo: no training pairs; label some comparisons first (rlhf label)");
  // With data.pairs = all the labelled pairs train as they are, not a copy of them.
  const PairSelection selection = parse_pair_selection(cfg.data.pairs);
  std::vector<PreferencePair> selected;
  if (selection != PairSelection::kAll) selected = select_pairs(labelled, selection);
  const std::vector<PreferencePair>& train = selection == PairSelection::kAll ? labelled : selected;
  if (train.empty()) {
    fail(ErrorKind::kData, "dpo: data.pairs = ", cfg.data.pairs, " leaves no training pairs out of ", labelled.size(),
         " labelled (every prompt's replies won equally often); use data.pairs = all");
  }
  if (train.size() != labelled.size()) {
    log_info("dpo: data.pairs = ", cfg.data.pairs, ": ", train.size(), " training pairs from ", labelled.size(),
             " labelled");
  }
  // The cached reference log-probs belong to this policy and these pairs.
  TrainingRun run("dpo", cfg.out_dir, config_to_json(cfg), tc, ResumeRules::fixing({"policy", "data", "lora"}), dist);
  const torch::Device device = run.device();

  LoadedPolicy start = load_chat_policy(cfg.policy, device);
  GPT model = start.model;
  Tokenizer tokenizer = start.tokenizer;
  const ChatTemplate chat(tokenizer);
  const std::string system_prompt = start.trainer_state.value("system_prompt", "");
  model->eval();  // no dropout: the reference log-probs must be reproducible
  set_compute_dtype(*model, run.compute_dtype());  // the reference's log-probs too, so step 0's margins are 0

  // Reference log-probs, once: the starting policy is the reference.
  const std::string cache_path = run.dir().file("reference_logps.safetensors");
  torch::Tensor ref_train, ref_eval;
  if (path_exists(cache_path)) {
    const TensorMap cache = load_safetensors(cache_path).tensors;
    ref_train = cache.at("train").clone();
    ref_eval = cache.at("eval").clone();
    if (ref_train.size(1) != static_cast<int64_t>(train.size()) || ref_eval.size(1) != static_cast<int64_t>(eval.size())) {
      fail(ErrorKind::kData, cache_path, " holds reference log-probs of ", ref_train.size(1), " + ", ref_eval.size(1),
           " pairs but this run has ", train.size(), " + ", eval.size(), "; the labels changed: start a new out_dir");
    }
  } else {
    if (run.resume()) {
      fail(ErrorKind::kCorrupt, cache_path, " is missing from a run with checkpoints; start a new out_dir");
    }
    const auto t0 = std::chrono::steady_clock::now();
    ref_train = reference_logprobs(model, chat, train, objective.mean, tc.batch_size, device);
    ref_eval = reference_logprobs(model, chat, eval, objective.mean, tc.batch_size, device);
    if (dist.is_main()) save_safetensors(cache_path, {{"train", ref_train}, {"eval", ref_eval}});
    log_info("dpo: reference log-probs of ", train.size() + eval.size(), " pairs in ",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), " s (cached in ",
             cache_path, ")");
  }

  std::unique_ptr<LoraAdapters> lora;
  if (cfg.lora.enabled) {
    lora = std::make_unique<LoraAdapters>(model, cfg.lora, mix_seed({static_cast<uint64_t>(tc.seed), 0x10a4u}));
  }
  std::vector<NamedParameter> params = trainable_parameters(*model, lora.get());
  AdamW optimizer(params, cfg.optim);

  const int64_t global_batch = static_cast<int64_t>(tc.batch_size) * tc.grad_accum * dist.world_size;
  const int64_t total_steps =
      tc.max_steps > 0 ? tc.max_steps
                       : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(tc.epochs * train.size() / global_batch)));
  EpochOrder order(static_cast<int64_t>(train.size()), mix_seed({static_cast<uint64_t>(tc.seed), 0xd70u}));

  double best_loss = std::numeric_limits<double>::infinity();
  if (const auto& resume = run.resume()) {
    restore_training_state(resume->dir, model, lora.get(), optimizer);
    best_loss = resume->state.number("best_eval_loss", best_loss);  // infinity is stored as null
  }
  const int64_t start_step = run.resume_step();
  run.start(params, start_step);
  log_info("dpo: ", train.size(), " training and ", eval.size(), " held-out pairs, loss ", cfg.dpo.loss_type,
           ", beta ", cfg.dpo.beta, cfg.dpo.label_smoothing > 0 ? str_cat(", label smoothing ", cfg.dpo.label_smoothing) : "",
           cfg.dpo.rpo_alpha > 0 ? str_cat(", RPO alpha ", cfg.dpo.rpo_alpha) : "",
           cfg.lora.enabled ? str_cat(", LoRA rank ", cfg.lora.rank) : std::string(), ", ", total_steps, " steps, ",
           run.threads(), " threads");

  DpoResult result;
  auto save = [&](int64_t step, const DpoStats& e, bool best) {
    run.commit(step, best, [&](const std::string& folder) {
      CheckpointWrite w = policy_checkpoint(model, lora.get(), tokenizer);
      w.trainer_state = run.state(step, {{"eval", e.to_json("")}, {"best_eval_loss", best_loss},
                                         {"last_label_id", last_label_id}, {"system_prompt", system_prompt}})
                            .to_json();
      w.optimizer_state = optimizer.state();
      save_checkpoint(folder, w);
    });
  };

  ProgressMeter progress("dpo", total_steps, tc.log_interval);
  for (int64_t step = start_step; step < total_steps; ++step) {
    // The weight of the whole global step first, so every micro-batch divides by the same number.
    double step_weight = 0;
    for (int64_t k = step * global_batch; k < (step + 1) * global_batch; ++k) step_weight += train[order.at(k)].weight;
    DpoStats s;
    double step_loss = 0;
    for (int m = 0; m < tc.grad_accum; ++m) {
      std::vector<const PreferencePair*> batch;
      std::vector<int64_t> index;
      for (int64_t k : micro_batch_samples(step, m, tc.batch_size, tc.grad_accum, dist.rank, dist.world_size)) {
        index.push_back(order.at(k));
        batch.push_back(&train[static_cast<size_t>(index.back())]);
      }
      const PairLogprobs lp = pair_logprobs(model, chat, batch, objective.mean, device);
      const DpoTerms t = pair_terms(lp, ref_train, index, batch, objective);
      std::vector<float> w;
      for (const PreferencePair* p : batch) w.push_back(static_cast<float>(p->weight));
      const torch::Tensor loss = (t.losses * torch::tensor(w).to(device)).sum() / step_weight;
      if (m == tc.grad_accum - 1) run.sync().arm();
      loss.backward();
      step_loss += loss.item<double>();
      accumulate(s, t, lp.chosen.detach(), lp.rejected.detach(), batch);
    }
    const auto [grad_norm, lr] = run.finish_step(optimizer, cfg.schedule, step, total_steps, tc.grad_clip);
    step_loss = all_reduce_sum(dist, step_loss);
    const int64_t done = step + 1;
    Json row = averaged(s).to_json("train/");
    row["step"] = done;
    row["train/loss"] = step_loss;
    row["lr"] = lr;
    row["grad_norm"] = grad_norm;
    run.log(row);
    progress.step_done(done, step_loss, lr, static_cast<double>(global_batch), "pairs");

    const bool last = done == total_steps;
    if ((tc.eval_interval > 0 && done % tc.eval_interval == 0) || last) {
      const DpoStats e = eval.empty() ? averaged(s) : evaluate(model, chat, eval, ref_eval, objective, tc.batch_size, device);
      const bool improved = e.loss < best_loss;
      if (improved) best_loss = e.loss;
      Json erow = e.to_json("eval/");
      erow["step"] = done;
      run.log(erow);
      log_info("eval step ", done, " | loss ", e.loss, " | accuracy ", e.accuracy, " | margin ", e.margin,
               " | logps chosen ", e.chosen_logp, " rejected ", e.rejected_logp, improved ? " (best)" : "");
      save(done, e, improved);
      result.eval = e;
    } else if (run.checkpoint_due(done, total_steps)) {
      save(done, averaged(s), false);
    }
    progress.pause_done();
  }
  run.finish();
  result.checkpoint = resolve_checkpoint(cfg.out_dir, /*prefer_best=*/true);
  return result;
}

}  // namespace rlhf

#include "policy/sft.h"

#include <torch/nn/functional/loss.h>

#include <cmath>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "train/data_order.h"
#include "train/distributed.h"
#include "train/progress.h"
#include "train/training_run.h"

namespace rlhf {
namespace {

std::string first_system_prompt(const std::string& path) {
  std::string found;
  read_jsonl(path, [&](const Json& obj, size_t) {
    if (!found.empty() || !obj.contains("messages")) return;
    for (const auto& m : obj["messages"]) {
      if (m.value("role", "") == "system") {
        found = m.value("content", "");
        return;
      }
    }
  });
  return found;
}

// Mean loss per assistant token over a whole set.
double evaluate(GPT& model, const std::vector<ChatTokens>& examples, int batch_size, int32_t pad,
                torch::Device device) {
  torch::NoGradGuard no_grad;
  model->eval();
  double total = 0, tokens = 0;
  for (size_t i = 0; i < examples.size(); i += batch_size) {
    std::vector<const ChatTokens*> batch;
    for (size_t j = i; j < std::min(examples.size(), i + batch_size); ++j) batch.push_back(&examples[j]);
    SftBatch b = collate_sft(batch, pad);
    torch::Tensor logits = model->forward(b.input_ids.to(device));  // right padding: causal attention suffices
    total += masked_token_loss_sum(logits, b.targets.to(device), b.loss_mask.to(device)).item<double>();
    tokens += b.loss_mask.sum().item<double>();
  }
  model->train();
  return total / std::max(tokens, 1.0);
}

int64_t loss_tokens(const ChatTokens& e) {
  int64_t n = 0;
  for (size_t i = 1; i < e.loss_mask.size(); ++i) n += e.loss_mask[i];
  return n;
}

}  // namespace

std::vector<ChatTokens> load_sft_examples(const std::string& path, const ChatTemplate& chat, int64_t max_tokens,
                                          int64_t* dropped) {
  std::vector<ChatTokens> out;
  int64_t too_long = 0;
  read_jsonl(path, [&](const Json& obj, size_t line) {
    ChatTokens t = chat.render(conversation_from_json(obj, path, line, /*need_assistant=*/true));
    if (static_cast<int64_t>(t.ids.size()) > max_tokens) {
      ++too_long;
      return;
    }
    out.push_back(std::move(t));
  });
  if (dropped != nullptr) *dropped = too_long;
  if (out.empty()) {
    fail(ErrorKind::kData, path, ": no usable conversations",
         too_long > 0 ? str_cat(" (all ", too_long, " are longer than the model's context of ", max_tokens, " tokens)")
                      : std::string());
  }
  return out;
}

SftBatch collate_sft(const std::vector<const ChatTokens*>& examples, int32_t pad_id, int64_t pad_to) {
  const auto B = static_cast<int64_t>(examples.size());
  int64_t T = pad_to;
  for (const auto* e : examples) T = std::max<int64_t>(T, static_cast<int64_t>(e->ids.size()) - 1);
  SftBatch b;
  b.input_ids = torch::full({B, T}, pad_id, torch::kLong);
  b.targets = torch::full({B, T}, pad_id, torch::kLong);
  b.attention_mask = torch::zeros({B, T}, torch::kLong);
  b.loss_mask = torch::zeros({B, T}, torch::kFloat);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto tgt = b.targets.accessor<int64_t, 2>();
  auto att = b.attention_mask.accessor<int64_t, 2>();
  auto lm = b.loss_mask.accessor<float, 2>();
  for (int64_t r = 0; r < B; ++r) {
    const ChatTokens& e = *examples[r];
    const int64_t n = static_cast<int64_t>(e.ids.size()) - 1;  // inputs predict the next token
    for (int64_t t = 0; t < n; ++t) {
      ids[r][t] = e.ids[t];
      tgt[r][t] = e.ids[t + 1];
      att[r][t] = 1;
      lm[r][t] = e.loss_mask[t + 1];
    }
  }
  return b;
}

torch::Tensor masked_token_loss_sum(const torch::Tensor& logits, const torch::Tensor& targets,
                                    const torch::Tensor& loss_mask) {
  torch::Tensor ce = torch::nn::functional::cross_entropy(
      logits.reshape({-1, logits.size(-1)}).to(torch::kFloat), targets.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  return (ce * loss_mask.reshape({-1}).to(ce.dtype())).sum();
}

SftResult run_sft(const SftConfig& cfg, const DistInfo& dist) {
  const auto& tc = cfg.train;
  if (tc.batch_size < 1 || tc.grad_accum < 1) fail(ErrorKind::kConfig, "train.batch_size and train.grad_accum must be at least 1");
  // Resuming with other data or another adaptation would mix two runs.
  TrainingRun run("sft", cfg.out_dir, config_to_json(cfg), tc, ResumeRules::fixing({"data", "freeze", "lora"}), dist);
  const torch::Device device = run.device();

  // The starting model and its tokenizer, with its chat template (ours, and
  // our markers, if it has none).
  LoadedPolicy base = load_policy(cfg.init_from);
  GPT model = base.model;
  Tokenizer tokenizer = base.tokenizer;
  prepare_chat_tokenizer(tokenizer, cfg.chat_template, cfg.chat_special_tokens);
  if (tokenizer.vocab_size() > model->config().vocab_size) model->resize_vocab(tokenizer.vocab_size());
  if (cfg.random_init) init_gpt_weights(*model, model->config(), static_cast<uint64_t>(tc.seed));
  model->to(device);
  model->train();
  set_compute_dtype(*model, run.compute_dtype());
  const ChatTemplate chat(tokenizer);
  const int32_t pad = chat.pad_id();

  const int64_t ctx = model->config().n_positions;
  int64_t dropped = 0;
  std::vector<ChatTokens> train = load_sft_examples(cfg.data.train_file, chat, ctx, &dropped);
  if (dropped > 0) log_info("note: ", dropped, " training conversations are longer than ", ctx, " tokens and were left out");
  std::vector<ChatTokens> val = load_sft_examples(cfg.data.val_file, chat, ctx, &dropped);

  std::unique_ptr<LoraAdapters> lora;
  std::vector<NamedParameter> params;
  if (cfg.lora.enabled) {
    lora = std::make_unique<LoraAdapters>(model, cfg.lora, mix_seed({static_cast<uint64_t>(tc.seed), 0x10a4u}));
    params = lora->parameters();
  } else {
    params = apply_freeze(model, cfg.freeze);
  }
  int64_t total_params = 0, trainable = 0;
  for (auto& [n, p] : named_parameters(*model)) total_params += p.numel();
  for (const auto& p : params) trainable += p.tensor.numel();
  log_info("sft: ", train.size(), " training and ", val.size(), " validation conversations; trainable parameters ",
           format_count(static_cast<double>(trainable)), " of ", format_count(static_cast<double>(total_params)),
           " (", 100.0 * trainable / std::max<int64_t>(total_params, 1), "%)",
           cfg.lora.enabled ? str_cat(", LoRA rank ", cfg.lora.rank) : std::string(), ", ", run.threads(), " threads");
  if (params.empty()) fail(ErrorKind::kConfig, "every parameter is frozen: nothing would train");
  AdamW optimizer(params, cfg.optim);

  const int64_t global_batch = static_cast<int64_t>(tc.batch_size) * tc.grad_accum * dist.world_size;
  const int64_t total_steps =
      tc.max_steps > 0 ? tc.max_steps
                       : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(tc.epochs * train.size() / global_batch)));
  std::vector<int64_t> lengths;
  for (const auto& e : train) lengths.push_back(static_cast<int64_t>(e.ids.size()));
  LengthGroupedOrder order(lengths, global_batch, mix_seed({static_cast<uint64_t>(tc.seed), 0x5f7u}));
  const std::string system_prompt = first_system_prompt(cfg.data.train_file);

  int64_t best_step = -1;
  double best_val = std::numeric_limits<double>::infinity();
  SftResult result;
  if (const auto& resume = run.resume()) {
    restore_training_state(resume->dir, model, lora.get(), optimizer);
    best_step = resume->state.integer("best_step", -1);
    best_val = resume->state.number("best_val_loss", best_val);  // infinity is stored as null
    for (const auto& p : resume->state.extra.value("val_curve", Json::array())) result.val_curve.emplace_back(p[0], p[1]);
  }
  const int64_t start_step = run.resume_step();
  run.start(params, start_step);

  auto save = [&](int64_t step, double val_loss, bool best) {
    run.commit(step, best, [&](const std::string& folder) {
      CheckpointWrite w = policy_checkpoint(model, lora.get(), tokenizer);
      Json curve = Json::array();
      for (const auto& [s, l] : result.val_curve) curve.push_back({s, l});
      w.trainer_state = run.state(step, {{"val_loss", val_loss}, {"best_val_loss", best_val}, {"best_step", best_step},
                                         {"val_curve", curve}, {"system_prompt", system_prompt},
                                         {"trainable_parameters", trainable}})
                            .to_json();
      w.optimizer_state = optimizer.state();
      save_checkpoint(folder, w);
    });
  };

  ProgressMeter progress("sft", total_steps, tc.log_interval);
  double val_loss = std::nan("");
  for (int64_t step = start_step; step < total_steps; ++step) {
    // Count the loss tokens of the whole global step first, so every
    // micro-batch divides by the same number.
    double step_tokens = 0;
    for (int64_t k = step * global_batch; k < (step + 1) * global_batch; ++k) {
      step_tokens += static_cast<double>(loss_tokens(train[order.at(k)]));
    }
    double step_loss = 0;
    for (int m = 0; m < tc.grad_accum; ++m) {
      torch::manual_seed(mix_seed({static_cast<uint64_t>(tc.seed), static_cast<uint64_t>(step),
                                   static_cast<uint64_t>(m), static_cast<uint64_t>(dist.rank)}));
      std::vector<const ChatTokens*> batch;
      for (int64_t k : micro_batch_samples(step, m, tc.batch_size, tc.grad_accum, dist.rank, dist.world_size)) {
        batch.push_back(&train[order.at(k)]);
      }
      SftBatch b = collate_sft(batch, pad);
      // Right padding only follows real tokens, so the causal mask already
      // hides it from them: no padding mask needed (and the fast path runs).
      torch::Tensor logits = model->forward(b.input_ids.to(device));
      // This rank's share of the step's loss (gradients are summed across ranks).
      torch::Tensor loss = masked_token_loss_sum(logits, b.targets.to(device), b.loss_mask.to(device)) / step_tokens;
      if (m == tc.grad_accum - 1) run.sync().arm();
      loss.backward();
      step_loss += loss.item<double>();
    }
    const auto [grad_norm, lr] = run.finish_step(optimizer, cfg.schedule, step, total_steps, tc.grad_clip);
    step_loss = all_reduce_sum(dist, step_loss);
    const int64_t done = step + 1;
    run.log({{"step", done}, {"loss/train", step_loss}, {"lr", lr}, {"grad_norm", grad_norm}});
    progress.step_done(done, step_loss, lr, static_cast<double>(global_batch), "conversations");

    const bool last = done == total_steps;
    bool saved = false;
    if ((tc.eval_interval > 0 && done % tc.eval_interval == 0) || last) {
      val_loss = evaluate(model, val, tc.batch_size, pad, device);
      result.val_curve.emplace_back(done, val_loss);
      const bool improved = val_loss < best_val;
      if (improved) {
        best_val = val_loss;
        best_step = done;
      }
      log_info("eval step ", done, " | val loss ", val_loss, improved ? " (best)" : "");
      run.log({{"step", done}, {"loss/val", val_loss}});
      if (improved) {
        save(done, val_loss, /*best=*/true);
        saved = true;
      }
    }
    if (!saved && run.checkpoint_due(done, total_steps)) save(done, val_loss, /*best=*/false);
    progress.pause_done();
  }

  run.finish();  // rank 0's checkpoints are on disk
  result.best_checkpoint = resolve_checkpoint(cfg.out_dir, /*prefer_best=*/true);
  result.best_val_loss = best_val;

  // A few replies to held-out prompts, from the final weights.
  if (dist.is_main() && cfg.sample.count > 0 && path_exists(cfg.sample.prompts_file)) {
    std::vector<std::vector<int32_t>> prompts;
    std::vector<Conversation> convs;
    read_jsonl(cfg.sample.prompts_file, [&](const Json& obj, size_t line) {
      if (static_cast<int>(convs.size()) >= cfg.sample.count) return;
      convs.push_back(prompt_from_json(obj, cfg.sample.prompts_file, line, system_prompt));
      prompts.push_back(chat.render_prompt(convs.back()));
    });
    Generation g = generate(model, prompts, cfg.sample.sampling, chat.stop_tokens(), pad);
    std::string text;
    const std::vector<ChatReply> replies = decode_replies(chat, g.tokens, g.lengths, g.finished);
    for (size_t i = 0; i < prompts.size(); ++i) {
      result.samples.push_back("customer: " + convs[i].back().content + "\nagent: " + replies[i].text);
      text += result.samples.back() + "\n\n";
    }
    write_file_atomic(run.dir().file("samples.txt"), text);
  }
  return result;
}

}  // namespace rlhf

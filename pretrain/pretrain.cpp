#include "pretrain/pretrain.h"

#include <torch/nn/functional/loss.h>

#include <chrono>
#include <cmath>
#include <optional>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "pretrain/corpus.h"
#include "pretrain/token_data.h"
#include "train/data_order.h"
#include "train/distributed.h"
#include "train/progress.h"
#include "train/training_run.h"

namespace rlhf {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

struct PreparedData {
  Tokenizer tokenizer;
  std::string train_path, val_path;
};

// Corpus -> tokenizer -> train.bin / val.bin under <run>/data, reused when
// the corpus, tokenizer settings and split are unchanged.
PreparedData prepare_data(const PretrainConfig& cfg, const RunDir& run, const DistInfo& dist) {
  const std::string data_dir = run.file("data");
  const std::string tok_dir = run.file("tokenizer");
  const std::string meta_path = join_path(data_dir, "meta.json");
  PreparedData out;
  out.train_path = join_path(data_dir, "train.bin");
  out.val_path = join_path(data_dir, "val.bin");

  Corpus corpus = read_corpus(cfg.data.corpus, cfg.data.extensions);
  const Json want = {{"corpus", corpus.fingerprint},
                     {"tokenizer", cfg.data.tokenizer},
                     {"vocab_size", cfg.data.vocab_size},
                     {"split_digits", cfg.data.split_digits},
                     {"val_fraction", cfg.data.val_fraction},
                     {"seed", cfg.train.seed}};
  if (path_exists(meta_path) && path_exists(out.train_path) && path_exists(out.val_path)) {
    Json meta = read_json_file(meta_path);
    if (meta.value("inputs", Json()) == want) {
      out.tokenizer = Tokenizer::load(cfg.data.tokenizer.empty() ? tok_dir : cfg.data.tokenizer);
      log_info("data: reusing ", meta.value("train_tokens", 0), " train and ", meta.value("val_tokens", 0),
               " validation tokens in ", data_dir);
      return out;
    }
  }
  if (!dist.is_main()) {
    fail(ErrorKind::kData, "rank ", dist.rank, ": token files in ", data_dir,
         " are missing or stale after rank 0 prepared them; do all ranks see the same run folder?");
  }
  const auto t0 = Clock::now();
  log_info("data: ", corpus.documents.size(), " documents, ", format_count(static_cast<double>(corpus.total_bytes())),
           " bytes from ", corpus.files.size(), " files");
  if (cfg.data.tokenizer.empty()) {
    TokenizerTrainOptions options;
    options.vocab_size = cfg.data.vocab_size;
    options.split_digits = cfg.data.split_digits;
    out.tokenizer = Tokenizer::train(corpus.documents, options);
    out.tokenizer.save(tok_dir);
    log_info("tokenizer: trained ", out.tokenizer.vocab_size(), " tokens (", out.tokenizer.num_merges(),
             " merges) in ", format_duration(seconds_since(t0)));
  } else {
    out.tokenizer = Tokenizer::load(cfg.data.tokenizer);
    out.tokenizer.add_special_tokens(special::defaults());
    out.tokenizer.save(tok_dir);
  }

  // Documents in a seeded order, each followed by <|endoftext|>; the last
  // val_fraction of the tokens is the validation split.
  const auto t1 = Clock::now();
  std::vector<size_t> order(corpus.documents.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  SplitMix rng(mix_seed({static_cast<uint64_t>(cfg.train.seed), 0xda7au}));
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
  const int32_t eot = out.tokenizer.special_id(special::kEndOfText);
  std::vector<int32_t> tokens;
  tokens.reserve(corpus.total_bytes() / 3);
  for (size_t i : order) {
    std::vector<int32_t> ids = out.tokenizer.encode(corpus.documents[i]);
    tokens.insert(tokens.end(), ids.begin(), ids.end());
    tokens.push_back(eot);
  }
  const int64_t block = cfg.model.n_positions;
  int64_t n_val = std::max<int64_t>(static_cast<int64_t>(tokens.size() * cfg.data.val_fraction), block + 2);
  if (static_cast<int64_t>(tokens.size()) - n_val < 3 * (block + 1)) {
    fail(ErrorKind::kData, "the corpus encodes to only ", tokens.size(), " tokens: too few for a context of ",
         block, " plus a validation split. Add text, or lower model.n_positions.");
  }
  std::vector<int32_t> val(tokens.end() - n_val, tokens.end());
  tokens.resize(tokens.size() - n_val);
  make_dirs(data_dir);
  write_token_file(out.train_path, tokens, out.tokenizer.vocab_size());
  write_token_file(out.val_path, val, out.tokenizer.vocab_size());
  write_file_atomic(meta_path, Json{{"inputs", want},
                                    {"train_tokens", tokens.size()},
                                    {"val_tokens", val.size()},
                                    {"vocab_size", out.tokenizer.vocab_size()},
                                    {"files", corpus.files.size()}}
                                   .dump(2));
  const double secs = seconds_since(t1);
  log_info("data: encoded ", format_count(static_cast<double>(tokens.size() + val.size())), " tokens in ",
           format_duration(secs), " (", format_count(corpus.total_bytes() / std::max(secs, 1e-9) / 1e6),
           " MB/s); ", format_count(static_cast<double>(tokens.size())), " train, ",
           format_count(static_cast<double>(val.size())), " validation");
  return out;
}

double evaluate(GPT& model, const TokenFile& val, const PretrainConfig& cfg, torch::Device device) {
  torch::NoGradGuard no_grad;
  model->eval();
  const int64_t block = cfg.model.n_positions;
  const int64_t n = static_cast<int64_t>(cfg.train.eval_batches) * cfg.train.batch_size;
  const int64_t span = std::max<int64_t>(0, val.size() - block - 1);
  double total = 0;
  for (int b = 0; b < cfg.train.eval_batches; ++b) {
    std::vector<int64_t> starts;
    for (int i = 0; i < cfg.train.batch_size; ++i) {
      const int64_t k = static_cast<int64_t>(b) * cfg.train.batch_size + i;
      starts.push_back(n > 1 ? k * span / (n - 1) : 0);
    }
    auto [x, y] = make_batch(val, starts, block);
    total += next_token_loss(model->forward(x.to(device)), y.to(device)).item<double>();
  }
  model->train();
  return total / cfg.train.eval_batches;
}

std::vector<std::string> write_samples(GPT& model, const Tokenizer& tok, const SampleConfig& cfg,
                                       const RunDir& run) {
  if (cfg.prompts.empty()) return {};
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& p : cfg.prompts) prompts.push_back(tok.encode(p));
  const int32_t eot = tok.special_id(special::kEndOfText);
  Generation g = generate(model, prompts, cfg.sampling, {eot}, eot);
  std::vector<std::string> out;
  std::string text;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> ids;
    const int64_t n = g.lengths[i].item<int64_t>();
    for (int64_t j = 0; j < n; ++j) ids.push_back(static_cast<int32_t>(g.tokens[i][j].item<int64_t>()));
    out.push_back(cfg.prompts[i] + tok.decode(ids, /*skip_special=*/true));
    text += "=== sample " + std::to_string(i + 1) + " ===\n" + out.back() + "\n\n";
  }
  if (run.is_main()) write_file_atomic(run.file("samples.txt"), text);
  return out;
}

}  // namespace

torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets) {
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}).to(torch::kFloat),
                                              targets.reshape({-1}));
}

PretrainResult run_pretrain(const PretrainConfig& config_in, const DistInfo& dist) {
  PretrainConfig cfg = config_in;
  const auto& tc = cfg.train;
  if (tc.batch_size < 1 || tc.grad_accum < 1 || tc.max_steps < 1) {
    fail(ErrorKind::kConfig, "train.batch_size, train.grad_accum and train.max_steps must be at least 1");
  }
  std::optional<LoadedPolicy> base;
  if (!cfg.init_from.empty()) {
    if (!cfg.data.tokenizer.empty()) {
      fail(ErrorKind::kConfig, "init_from and data.tokenizer are both set; the checkpoint's tokenizer is used, so ",
           "leave data.tokenizer empty");
    }
    if (config_to_json(cfg.model) != config_to_json(PretrainConfig().model)) {
      fail(ErrorKind::kConfig, "init_from is set, so the model comes from ", cfg.init_from,
           "/config.json; remove the [model] settings");
    }
    base = load_policy(cfg.init_from);
    cfg.data.tokenizer = base->dir;
    cfg.model = base->model->config();
    cfg.model.vocab_size = 0;  // taken from the tokenizer below, grown for its special tokens if needed
  }
  RunDir folder(cfg.out_dir, dist.is_main());

  // Rank 0 prepares the token files; the others wait, then reuse them.
  PreparedData data;
  if (dist.is_main()) data = prepare_data(cfg, folder, dist);
  barrier(dist);
  if (!dist.is_main()) data = prepare_data(cfg, folder, dist);
  if (cfg.model.vocab_size != 0 && cfg.model.vocab_size != data.tokenizer.vocab_size()) {
    fail(ErrorKind::kConfig, "model.vocab_size = ", cfg.model.vocab_size, " but the tokenizer has ",
         data.tokenizer.vocab_size(), " tokens; leave model.vocab_size at 0 to take it from the tokenizer");
  }
  cfg.model.vocab_size = data.tokenizer.vocab_size();
  cfg.model.validate();
  TrainingRun run("pretrain", cfg.out_dir, config_to_json(cfg), tc, ResumeRules::fixing({"data", "model"}), dist);
  const torch::Device device = run.device();

  TokenFile train_file(data.train_path, cfg.model.vocab_size);
  TokenFile val_file(data.val_path, cfg.model.vocab_size);
  const int64_t block = cfg.model.n_positions;
  WindowSampler sampler(train_file.size(), block, mix_seed({static_cast<uint64_t>(tc.seed), 0xb47c4u}));

  GPT model(cfg.model);
  init_gpt_weights(*model, cfg.model, static_cast<uint64_t>(tc.seed));
  if (base) {
    // The checkpoint's weights; rows for special tokens it lacked start as
    // the mean embedding (TransformerImpl::resize_vocab).
    GPT start = base->model;
    if (start->config().vocab_size < cfg.model.vocab_size) start->resize_vocab(cfg.model.vocab_size);
    load_weights(*model, model_weights(*start), base->dir);
    log_info("pretrain: starting from ", base->dir);
  }
  model->to(device);
  model->train();
  set_compute_dtype(*model, run.compute_dtype());
  std::vector<NamedParameter> params;
  for (auto& [name, p] : named_parameters(*model)) params.push_back({name, p, default_decay(name, p)});
  AdamW optimizer(params, cfg.optim);

  if (const auto& resume = run.resume()) {
    load_weights(*model, load_model_tensors(resume->dir), resume->dir);
    optimizer.load_state(load_safetensors(join_path(resume->dir, "optimizer.safetensors")).tensors, resume->dir);
  }
  const int64_t start_step = run.resume_step();
  run.start(params, start_step);

  const int64_t tokens_per_step = static_cast<int64_t>(tc.batch_size) * tc.grad_accum * dist.world_size * block;
  log_info("pretrain: ", format_count(static_cast<double>(cfg.model.num_parameters())), " parameters, ",
           cfg.model.n_layer, " layers x ", cfg.model.n_embd, " wide, context ", block, ", ",
           format_count(static_cast<double>(tokens_per_step)), " tokens per step, ", tc.max_steps,
           " steps, ", run.threads(), " threads on ", device.str());

  auto save = [&](int64_t step, double val_loss) {
    run.commit(step, /*best=*/false, [&](const std::string& folder) {
      CheckpointWrite w;
      w.weights = model_weights(*model);
      w.hf_config = gpt_config_to_hf(cfg.model);
      w.tokenizer = &data.tokenizer;
      w.trainer_state = run.state(step, {{"val_loss", val_loss}, {"tokens_seen", step * tokens_per_step}}).to_json();
      w.optimizer_state = optimizer.state();
      save_checkpoint(folder, w);
    });
  };

  double val_loss = std::nan("");
  ProgressMeter progress("pretrain", tc.max_steps, tc.log_interval);
  for (int64_t step = start_step; step < tc.max_steps; ++step) {
    double step_loss = 0;
    for (int m = 0; m < tc.grad_accum; ++m) {
      torch::manual_seed(mix_seed({static_cast<uint64_t>(tc.seed), static_cast<uint64_t>(step),
                                   static_cast<uint64_t>(m), static_cast<uint64_t>(dist.rank)}));
      std::vector<int64_t> starts;
      for (int64_t k : micro_batch_samples(step, m, tc.batch_size, tc.grad_accum, dist.rank, dist.world_size)) {
        starts.push_back(sampler.start(k));
      }
      auto [x, y] = make_batch(train_file, starts, block);
      torch::Tensor loss = next_token_loss(model->forward(x.to(device)), y.to(device));
      if (m == tc.grad_accum - 1) run.sync().arm();
      // This rank's share of the global mean (gradients are summed across ranks).
      (loss / (tc.grad_accum * dist.world_size)).backward();
      step_loss += loss.item<double>() / tc.grad_accum;
    }
    const auto [grad_norm, lr] = run.finish_step(optimizer, cfg.schedule, step, tc.max_steps, tc.grad_clip);
    step_loss = all_reduce_sum(dist, step_loss) / dist.world_size;

    const int64_t done = step + 1;
    run.log({{"step", done}, {"loss/train", step_loss}, {"lr", lr}, {"grad_norm", grad_norm},
                     {"tokens", done * tokens_per_step}});
    progress.step_done(done, step_loss, lr, static_cast<double>(tokens_per_step), "tok");
    const bool last = done == tc.max_steps;
    if ((tc.eval_interval > 0 && done % tc.eval_interval == 0) || last) {
      val_loss = evaluate(model, val_file, cfg, device);
      log_info("eval step ", done, " | val loss ", val_loss, " | val ppl ", std::exp(val_loss));
      run.log({{"step", done}, {"loss/val", val_loss}, {"ppl/val", std::exp(val_loss)}});
    }
    if (run.checkpoint_due(done, tc.max_steps)) save(done, val_loss);
    progress.pause_done();
  }

  run.finish();  // rank 0's last checkpoint is on disk
  PretrainResult result;
  result.checkpoint = resolve_checkpoint(cfg.out_dir);
  if (std::isnan(val_loss)) val_loss = evaluate(model, val_file, cfg, device);
  result.final_val_loss = val_loss;
  if (dist.is_main()) result.samples = write_samples(model, data.tokenizer, cfg.sample, folder);
  return result;
}

}  // namespace rlhf

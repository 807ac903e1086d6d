// Supervised fine-tuning (SFT): adapt a pretrained model to conversations in
// the `messages` format, learning only the assistant's tokens. Optional
// freezing or LoRA; validation loss every N steps; the best checkpoint is
// kept; a killed run resumes exactly. `rlhf sft --config configs/sft.toml`.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/adapt.h"
#include "policy/chat.h"
#include "policy/generate.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/training_run.h"

namespace rlhf {

struct SftDataConfig {
  std::string train_file = "data/support/train.jsonl";  // {"messages": [...]} per line
  std::string val_file = "data/support/val.jsonl";      // same format; validation loss only
  template <class V> void visit(V& v) {
    v("train_file", train_file);
    v("val_file", val_file);
  }
};

struct SftLoopConfig : RunSettings {
  SftLoopConfig() {
    seed = 1234;  // data order, dropout, LoRA and random initialisation
    checkpoint_interval = 100;
  }
  int batch_size = 16;              // conversations per micro-batch, e.g. 16
  int grad_accum = 1;               // micro-batches per optimizer step
  double epochs = 2.0;              // passes over the training set (when max_steps is 0)
  int64_t max_steps = 0;            // optimizer steps; 0 = from epochs
  double grad_clip = 1.0;           // global gradient-norm limit (0 = off)
  int log_interval = 10;            // steps between progress lines
  int eval_interval = 50;           // steps between validation passes (0 = only at the end)
  template <class V> void visit(V& v) {
    v("batch_size", batch_size, Range::at_least(1));
    v("grad_accum", grad_accum, Range::at_least(1));
    v("epochs", epochs, Range::at_least(0));
    v("max_steps", max_steps, Range::at_least(0));
    v("grad_clip", grad_clip, Range::at_least(0));
    visit_run(v);
    v("log_interval", log_interval, Range::at_least(1));
    v("eval_interval", eval_interval, Range::at_least(0));
  }
};

struct SftSampleConfig {
  std::string prompts_file = "data/support/heldout_prompts.jsonl";  // replies printed at the end
  int count = 3;                    // how many prompts (0 = none)
  SamplingConfig sampling = [] {
    SamplingConfig s;
    s.temperature = 0.7;
    s.max_new_tokens = 96;
    return s;
  }();
  template <class V> void visit(V& v) {
    v("prompts_file", prompts_file);
    v("count", count, Range::at_least(0));
    v.section("sampling", sampling);
  }
};

struct SftConfig {
  std::string out_dir = "runs/sft";        // the run folder
  std::string init_from = "runs/pretrain";  // pretrained checkpoint or run folder
  bool random_init = false;  // keep only init_from's architecture and tokenizer (the no-pretraining baseline)
  // A Jinja chat template file that replaces init_from's (tokenizer_config.json
  // "chat_template"); empty: init_from's own, or ours if it has none. The SFT
  // checkpoint carries it on to every later stage.
  std::string chat_template;
  // Special tokens that template writes and init_from's tokenizer lacks, e.g.
  // ["<|im_start|>", "<|im_end|>"] for ChatML; they are added and the model's
  // vocabulary grows (new rows start at the mean embedding).
  std::vector<std::string> chat_special_tokens;
  SftDataConfig data;
  SftLoopConfig train;
  AdamWConfig optim = [] {
    AdamWConfig o;
    o.weight_decay = 0.0;
    return o;
  }();
  ScheduleConfig schedule = [] {
    ScheduleConfig s;
    s.lr = 5e-4;
    s.min_lr = 5e-5;
    s.warmup_steps = 20;
    return s;
  }();
  FreezeConfig freeze;
  LoraConfig lora;
  SftSampleConfig sample;
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("init_from", init_from);
    v("random_init", random_init);
    v("chat_template", chat_template);
    v("chat_special_tokens", chat_special_tokens);
    v.section("data", data);
    v.section("train", train);
    v.section("optim", optim);
    v.section("schedule", schedule);
    v.section("freeze", freeze);
    v.section("lora", lora);
    v.section("sample", sample);
  }
};

struct SftResult {
  std::string best_checkpoint;
  double best_val_loss = 0;
  std::vector<std::pair<int64_t, double>> val_curve;  // (step, validation loss)
  std::vector<std::string> samples;
};

SftResult run_sft(const SftConfig& config, const DistInfo& dist = {});

// Loads conversations and renders them with the chat template. Conversations
// longer than `max_tokens` are dropped (counted in `dropped`).
std::vector<ChatTokens> load_sft_examples(const std::string& path, const ChatTemplate& chat, int64_t max_tokens,
                                          int64_t* dropped = nullptr);

// A right-padded batch: inputs, attention mask, next-token targets and the
// loss mask over targets (1 where the target is an assistant token).
struct SftBatch {
  torch::Tensor input_ids, attention_mask, targets, loss_mask;  // [B, T]
};
// Pads to the longest example, or to `pad_to` if larger.
SftBatch collate_sft(const std::vector<const ChatTokens*>& examples, int32_t pad_id, int64_t pad_to = 0);

// Summed (not averaged) cross-entropy over the loss mask: logits [B,T,V],
// targets/mask [B,T]. Divide by the step's loss-token count, so gradient
// accumulation and padding never change the result.
torch::Tensor masked_token_loss_sum(const torch::Tensor& logits, const torch::Tensor& targets,
                                    const torch::Tensor& loss_mask);

}  // namespace rlhf

// Checkpoint folders, in the ecosystem's layout:
//
//   model.safetensors       weights with Hugging Face GPT-2 names
//   config.json             Hugging Face config (+ our extras under "rlhf")
//   tokenizer.json, vocab.json, merges.txt, tokenizer_config.json, ...
//   trainer_state.json      stage, step, resolved run config
//   optimizer.safetensors   optimizer state, for resuming (optional)
//
// A folder is written beside its final name and renamed into place, so a
// killed run leaves either the old checkpoint or the new one, never half.
#pragma once

#include <torch/nn/module.h>

#include <optional>
#include <string>

#include "common/config.h"
#include "policy/gpt.h"
#include "tokenizer/tokenizer.h"
#include "train/safetensors.h"

namespace rlhf {

struct CheckpointWrite {
  TensorMap weights;                   // model.safetensors (see model_weights())
  Json hf_config;                      // config.json contents
  const Tokenizer* tokenizer = nullptr;
  Json trainer_state = Json::object();  // trainer_state.json
  TensorMap optimizer_state;           // optional
  // Extra files: safetensors (name -> tensors) and JSON (name -> value),
  // e.g. LoRA adapters in PEFT's layout.
  std::map<std::string, TensorMap> extra_tensors;
  std::map<std::string, Json> extra_json;
};

// bos/eos/pad token ids for config.json and generation_config.json, as
// transformers reads them: bos = pad = <|endoftext|>, eos = [<|end|>,
// <|endoftext|>] when the tokenizer has chat tokens. Empty without
// <|endoftext|>.
Json special_token_ids(const Tokenizer& tokenizer);

// A checkpoint folder's weights: model.safetensors, or the shards that
// model.safetensors.index.json lists (as transformers writes large models).
// Every tensor the index names must be in its shard; errors name the file.
TensorMap load_model_tensors(const std::string& dir);
bool has_model_weights(const std::string& dir);

// All parameters and buffers of a module by name (what model.safetensors holds).
TensorMap model_weights(torch::nn::Module& model);

void save_checkpoint(const std::string& dir, const CheckpointWrite& contents);

// Copies tensors into a module's parameters and buffers by name. Accepts
// names with or without the "transformer." prefix and ignores GPT-2's
// non-parameter buffers ("attn.bias", "attn.masked_bias") and a tied
// "lm_head.weight". A missing, unexpected or misshapen tensor is an error
// naming it and `source`.
void load_weights(torch::nn::Module& model, const TensorMap& tensors, const std::string& source,
                  bool allow_missing = false);

// A checkpoint folder given a run folder or a checkpoint folder: a folder
// holding model.safetensors is used as is; a run folder resolves to its
// "best" checkpoint if asked and present, else its latest.
std::string resolve_checkpoint(const std::string& path, bool prefer_best = false);

struct LoadedPolicy {
  GPT model{nullptr};
  Tokenizer tokenizer;
  Json config;         // config.json
  Json trainer_state;  // trainer_state.json (empty object if absent)
  std::string dir;     // the resolved folder
};

// Makes every parameter and buffer of `dst` the very tensor `src` holds
// under the same name (no copy): two modules over one set of weights, e.g.
// PPO's reference beside a LoRA policy. Move both to their device first.
void share_weights(torch::nn::Module& dst, torch::nn::Module& src);

LoadedPolicy load_policy(const std::string& path, torch::Device device = torch::kCPU);

Json read_json_file(const std::string& path);

// Checkpoints of a run live in <run>/checkpoints/step-NNNNNNN; "latest" and
// "best" files name them.
std::string checkpoint_name(int64_t step);
std::optional<std::string> latest_checkpoint(const std::string& run_dir);
// Points "latest" (or "best") at `name`, then deletes all but the newest
// `keep` step folders (never the one "best" names).
void mark_checkpoint(const std::string& run_dir, const std::string& name, const char* which = "latest");
void prune_checkpoints(const std::string& run_dir, int keep);
// A stage's checkpoint at `step`, in one call: writes it, points "latest"
// (and with `best` "best") at it, keeps the newest `keep`. Returns its name.
std::string commit_checkpoint(const std::string& run_dir, int64_t step, const CheckpointWrite& contents, bool best,
                              int keep);

}  // namespace rlhf

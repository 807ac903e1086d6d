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
#include "train/checkpoints.h"
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

}  // namespace rlhf

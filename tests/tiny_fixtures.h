// Small models, tokenizers and datasets for the suites that train: quick to
// build, but real (a trained BPE, the shipped data generator).
#pragma once

#include <string>

#include "common/fs.h"
#include "policy/checkpoint.h"
#include "policy/gpt.h"
#include "support/generator.h"
#include "tokenizer/tokenizer.h"

namespace rlhf::test {

// Support conversations from the real generator, small.
inline support::SupportData tiny_support_data(int train = 64, int val = 16, int heldout = 8) {
  support::GeneratorConfig g;
  g.train_dialogues = train;
  g.val_dialogues = val;
  g.heldout_prompts = heldout;
  return support::generate_support_data(g);
}

inline Tokenizer tiny_support_tokenizer(const support::SupportData& data, int vocab = 700) {
  std::vector<std::string> docs;
  for (const auto& row : data.train) {
    for (const auto& m : row["messages"]) docs.push_back(m["content"].get<std::string>());
  }
  TokenizerTrainOptions o;
  o.vocab_size = vocab;
  return Tokenizer::train(docs, o);
}

inline GPTConfig tiny_gpt_config(int vocab, int context = 256) {
  GPTConfig c;
  c.vocab_size = vocab;
  c.n_positions = context;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 2;
  return c;
}

// A checkpoint of random weights with the given shape and tokenizer.
inline std::string write_random_checkpoint(const std::string& dir, const Tokenizer& tok, const GPTConfig& c,
                                           uint64_t seed) {
  GPT m(c);
  init_gpt_weights(*m, c, seed);
  CheckpointWrite w;
  w.weights = model_weights(*m);
  w.hf_config = gpt_config_to_hf(c);
  w.tokenizer = &tok;
  save_checkpoint(dir, w);
  return dir;
}

// A "pretrained" checkpoint (random weights) with the given tokenizer.
inline std::string write_tiny_checkpoint(const std::string& dir, const Tokenizer& tok, uint64_t seed = 1,
                                         int context = 256) {
  return write_random_checkpoint(dir, tok, tiny_gpt_config(tok.vocab_size(), context), seed);
}

// What the PPO tests start from: a random tiny policy at `dir`/policy and 32
// prompts at `dir`/prompts.jsonl. Returns the vocabulary size.
inline int32_t write_tiny_ppo_inputs(const std::string& dir) {
  auto data = tiny_support_data(16, 4, 4);
  Tokenizer tok = tiny_support_tokenizer(data);
  write_tiny_checkpoint(join_path(dir, "policy"), tok, 5, 128);
  std::string prompts;
  for (int i = 0; i < 32; ++i) prompts += R"({"prompt": "Where is order #)" + std::to_string(10000 + i) + "?\"}\n";
  write_file_atomic(join_path(dir, "prompts.jsonl"), prompts);
  return tok.vocab_size();
}

}  // namespace rlhf::test

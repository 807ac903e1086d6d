// The reward model: the GPT backbone with a scalar head, read at the last
// real token of each sequence whatever the padding (left or right; the
// classic bug is reading the last position of a right-padded row, trl#937).
// Names follow transformers' GPT2ForSequenceClassification ("transformer.*",
// "score.weight"), so a checkpoint opens there with num_labels = 1.
//
// The same module with per-token outputs is PPO's value model.
#pragma once

#include <torch/nn/modules/linear.h>

#include <optional>
#include <string>

#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "policy/gpt.h"

namespace rlhf {

struct SharedPromptBatch;

class ScalarHeadModelImpl : public torch::nn::Module {
 public:
  explicit ScalarHeadModelImpl(const GPTConfig& config);
  // Per-token scalars [B, T].
  torch::Tensor forward_tokens(const torch::Tensor& input_ids, const torch::Tensor& attention_mask);
  // One scalar per row [B], at the last position where attention_mask is 1.
  // `right_padded`: every row starts at position 0 (padding only at the end),
  // so causal attention alone keeps padding out and the fast path runs.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, bool right_padded = false);
  // One scalar per reply [R] of a SharedPromptBatch: each prompt runs once
  // and its keys and values serve all its replies, which see what they would
  // after it in one sequence (the same scores to float rounding).
  torch::Tensor forward_shared(const SharedPromptBatch& batch);
  // The score head's inputs [B, C] / [R, C] for forward / forward_shared:
  // the last hidden state at each row's last real token.
  torch::Tensor features(const torch::Tensor& input_ids, const torch::Tensor& attention_mask, bool right_padded = false);
  torch::Tensor features_shared(const SharedPromptBatch& batch);
  const GPTConfig& config() const { return transformer->config(); }

  Transformer transformer{nullptr};
  torch::nn::Linear score{nullptr};  // [1, C], no bias
  // Normalisation applied by normalized(): rewards have mean 0 and standard
  // deviation 1 on the SFT policy's replies. Saved in config.json.
  double gain = 1.0, bias = 0.0;
  torch::Tensor normalized(const torch::Tensor& raw) const { return raw * gain + bias; }
};
TORCH_MODULE(ScalarHeadModel);

// Index of the last real token per row: attention_mask [B, T] -> [B].
torch::Tensor last_token_index(const torch::Tensor& attention_mask);

// Bradley-Terry loss per pair: -log sigmoid(r_chosen - r_rejected - margin);
// ties train towards 0.5: -(log sigmoid(d) + log sigmoid(-d)) / 2 with
// d = r_chosen - r_rejected. All inputs [B]; returns [B].
// `label_noise` e > 0: the labels are taken to be flipped with probability
// e, -log((1 - e) sigmoid(d - margin) + e sigmoid(margin - d)), so a pair the
// model is sure was mislabelled pulls with a bounded force.
torch::Tensor bradley_terry_per_pair(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                                     const torch::Tensor& margin, const torch::Tensor& tie, double label_noise = 0.0);
// The weighted mean of bradley_terry_per_pair.
torch::Tensor bradley_terry_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                                 const torch::Tensor& margin, const torch::Tensor& tie, const torch::Tensor& weight);

// A reward model starting from a policy checkpoint's backbone, with a fresh
// head N(0, 1/sqrt(C + 1)) (as in Stiennon et al. 2020).
ScalarHeadModel reward_model_from_policy(const LoadedPolicy& policy, uint64_t seed);

struct LoadedRewardModel {
  ScalarHeadModel model{nullptr};
  Tokenizer tokenizer;
  Json trainer_state;
  std::string dir;
};
LoadedRewardModel load_reward_model(const std::string& path, torch::Device device = torch::kCPU);
Json reward_config_to_hf(const ScalarHeadModelImpl& model, int32_t pad_token_id);

// Token ids (and mask) for prompt + reply (+ <|end|> if the reply finished),
// as the policy saw them; right-padded batch.
struct ScoringBatch {
  torch::Tensor input_ids, attention_mask;
};
ScoringBatch reward_batch(const ChatTemplate& chat, const std::vector<const Conversation*>& prompts,
                          const std::vector<const std::string*>& replies, int64_t max_tokens,
                          const std::vector<bool>& finished = {});

// The same rows with each distinct prompt once: with 16 replies per prompt
// the prompt's tokens (most of a support conversation's) are computed once
// instead of 16 times.
struct SharedPromptBatch {
  torch::Tensor prompt_ids, prompt_mask;  // [P, Tp], left-padded
  torch::Tensor reply_ids, reply_mask;    // [R, Ts], right-padded; the reply's tokens (+ <|end|>)
  torch::Tensor prompt_of;                // [R] index of each reply's prompt
  SharedPromptBatch to(torch::Device device) const;
};
// Prompts are the same when their rendered tokens are. nullopt when a row
// would not fit in `max_tokens` (reward_batch keeps its end instead) or a
// reply has no tokens: score those with reward_batch.
std::optional<SharedPromptBatch> shared_prompt_batch(const ChatTemplate& chat,
                                                     const std::vector<const Conversation*>& prompts,
                                                     const std::vector<const std::string*>& replies,
                                                     int64_t max_tokens, const std::vector<bool>& finished = {});

}  // namespace rlhf

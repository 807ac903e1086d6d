// A decoder-only transformer with the GPT-2 architecture: learned position
// embeddings, pre-LayerNorm blocks, tanh-GELU MLP, LM head tied to the token
// embedding. Parameter names and layouts are Hugging Face GPT-2's
// ("transformer.h.0.attn.c_attn.weight", Conv1D weights stored [in, out]), so
// a checkpoint's model.safetensors + config.json opens in `transformers`.
//
// Shapes: B = batch, T = time (tokens), C = channels (n_embd), H = heads,
// D = C / H, V = vocabulary.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <string>
#include <vector>

#include "common/config.h"

namespace rlhf {

struct GPTConfig {
  int vocab_size = 8192;         // set from the tokenizer, e.g. 50257 for GPT-2
  int n_positions = 256;         // context length in tokens, e.g. 1024
  int n_embd = 384;              // width C, e.g. 768
  int n_layer = 6;               // transformer blocks, e.g. 12
  int n_head = 6;                // attention heads (n_embd % n_head == 0), e.g. 12
  double dropout = 0.0;          // embedding, attention and residual dropout, e.g. 0.1
  double layer_norm_epsilon = 1e-5;
  template <class V> void visit(V& v) {
    v("vocab_size", vocab_size);
    v("n_positions", n_positions);
    v("n_embd", n_embd);
    v("n_layer", n_layer);
    v("n_head", n_head);
    v("dropout", dropout);
    v("layer_norm_epsilon", layer_norm_epsilon);
  }
  // Fails with a message naming the field if the sizes are inconsistent.
  void validate() const;
  // Non-embedding parameters + the tied LM head, as counted for FLOPs.
  int64_t num_parameters() const;
};

// config.json in Hugging Face GPT-2 form, and back.
Json gpt_config_to_hf(const GPTConfig& config);
GPTConfig gpt_config_from_hf(const Json& hf, const std::string& source);

// Per-layer key/value cache for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, H, capacity, D]
  torch::Tensor key_mask;           // [B, capacity] 1 where the position is a real token
  int64_t length = 0;               // positions filled
};

// A low-rank update beside a frozen weight (LoRA, Hu et al. 2021):
// y += (x A) B * scale. Owned by policy/adapt.h's LoraAdapters; the layer
// only reads it.
struct LoraBranch {
  torch::Tensor A;  // [in, rank]
  torch::Tensor B;  // [rank, out], zero at the start
  double scale = 1.0;  // alpha / rank
};

// Hugging Face GPT-2's Conv1D: y = x W + b with W stored [in, out].
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t in, int64_t out);
  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out]
  torch::Tensor weight, bias;
  std::optional<LoraBranch> lora;  // set while LoRA adapters are attached
};
TORCH_MODULE(Conv1D);

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const GPTConfig& config, int layer);
  // x: [B, T, C]. bias: additive [B, 1, T, Tk] or undefined for plain causal.
  // With a cache, keys/values are appended at cache->length and attention
  // spans everything cached so far.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache);
  Conv1D c_attn{nullptr}, c_proj{nullptr};

 private:
  int n_head_, layer_;
  double dropout_;
};
TORCH_MODULE(Attention);

class MLPImpl : public torch::nn::Module {
 public:
  explicit MLPImpl(const GPTConfig& config);
  torch::Tensor forward(const torch::Tensor& x);
  Conv1D c_fc{nullptr}, c_proj{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(MLP);

class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const GPTConfig& config, int layer);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache);
  torch::nn::LayerNorm ln_1{nullptr}, ln_2{nullptr};
  Attention attn{nullptr};
  MLP mlp{nullptr};
};
TORCH_MODULE(Block);

// The backbone ("GPT2Model" in transformers): embeddings, blocks, final norm.
class TransformerImpl : public torch::nn::Module {
 public:
  explicit TransformerImpl(const GPTConfig& config);
  // input_ids [B, T] -> hidden states [B, T, C] after ln_f.
  // attention_mask [B, T] (1 = real token, 0 = padding) may be undefined: then
  // every token is real and positions are 0..T-1. With padding (left or
  // right), positions count real tokens only, so a padded row computes what
  // it would alone. With a cache, attention_mask covers the new tokens.
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        KVCache* cache = nullptr);
  const GPTConfig& config() const { return config_; }
  // Grows the vocabulary (e.g. to add chat tokens), keeping the old rows; new
  // rows start at the mean of the old ones.
  void resize_vocab(int new_vocab_size);

  torch::nn::Embedding wte{nullptr}, wpe{nullptr};
  torch::nn::ModuleList h{nullptr};
  torch::nn::LayerNorm ln_f{nullptr};

 private:
  GPTConfig config_;
};
TORCH_MODULE(Transformer);

// The language model ("GPT2LMHeadModel"): backbone + LM head tied to wte.
class GPTImpl : public torch::nn::Module {
 public:
  explicit GPTImpl(const GPTConfig& config);
  // Logits [B, T, V].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        KVCache* cache = nullptr);
  // Hidden [B, T, C] -> logits [B, T, V] through the tied embedding.
  torch::Tensor lm_head(const torch::Tensor& hidden);
  // An empty cache for `batch` rows and up to `capacity` positions.
  KVCache make_cache(int64_t batch, int64_t capacity);
  const GPTConfig& config() const { return transformer->config(); }

  Transformer transformer{nullptr};
};
TORCH_MODULE(GPT);

// GPT-2's tanh GELU; on CPU fp32 through a fused kernel (policy/kernels.h).
torch::Tensor gelu_tanh(const torch::Tensor& x);

// GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual
// projections scaled by 1/sqrt(2 * n_layer); deterministic for the seed.
void init_gpt_weights(torch::nn::Module& model, const GPTConfig& config, uint64_t seed);

// Parameters by Hugging Face name ("transformer.h.0.ln_1.weight", ...).
std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& model);

}  // namespace rlhf

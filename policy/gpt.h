// Decoder-only transformers of two families, chosen by GPTConfig::arch:
//
// - "gpt2": learned position embeddings, pre-LayerNorm blocks, tanh-GELU
//   MLP, LM head tied to the token embedding (or its own, untied).
//   Parameter names and layouts are Hugging Face GPT-2's
//   ("transformer.h.0.attn.c_attn.weight", Conv1D weights stored [in, out]).
// - "llama": the Llama family (Llama 2/3.x, Mistral, Qwen2/2.5/3, SmolLM2,
//   TinyLlama): RoPE, RMSNorm, SiLU-gated MLP, grouped-query attention, with
//   the switches below (policy/llama.h). Inside, its layers use the same
//   names scheme ("transformer.h.0.attn.q_proj.weight", [in, out]);
//   checkpoints are read and written with Hugging Face's names and layouts
//   ("model.layers.0.self_attn.q_proj.weight", [out, in]).
//
// Either way a checkpoint's model.safetensors + config.json opens in
// `transformers`.
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
  std::string arch = "gpt2";     // "gpt2" or "llama" (the Llama family)
  int vocab_size = 8192;         // set from the tokenizer, e.g. 50257 for GPT-2
  int n_positions = 256;         // context length in tokens, e.g. 1024
  int n_embd = 384;              // width C, e.g. 768
  int n_layer = 6;               // transformer blocks, e.g. 12
  int n_head = 6;                // attention heads (n_embd % n_head == 0 unless head_dim is set), e.g. 12
  double dropout = 0.0;          // embedding, attention and residual dropout, e.g. 0.1
  double layer_norm_epsilon = 1e-5;  // LayerNorm's (GPT-2) or RMSNorm's (llama) epsilon
  bool tie_word_embeddings = true;   // the LM head is the token embedding; false: its own weight
  // The Llama family only:
  std::string model_type = "llama";  // Hugging Face model_type written back: llama, mistral, qwen2, qwen3
  int n_kv_head = 0;             // key/value heads for grouped-query attention (0 = n_head), e.g. 8
  int head_dim = 0;              // per head (0 = n_embd / n_head), e.g. 128 (Qwen3)
  int intermediate_size = 0;     // gated MLP width (0 = 4 * n_embd), e.g. 14336
  double rope_theta = 10000;     // RoPE base, e.g. 500000 (Llama 3)
  std::string rope_type = "default";  // "default" or "llama3" (frequency-dependent scaling)
  double rope_factor = 8;        // llama3 scaling: factor
  double rope_low_freq_factor = 1;   // llama3 scaling: low_freq_factor
  double rope_high_freq_factor = 4;  // llama3 scaling: high_freq_factor
  int rope_original_positions = 8192;  // llama3 scaling: original_max_position_embeddings
  bool qkv_bias = false;         // biases on q, k, v (Qwen2; Llama's attention_bias)
  bool o_bias = false;           // a bias on the output projection (Llama's attention_bias)
  bool mlp_bias = false;         // biases in the MLP (Llama's mlp_bias)
  bool qk_norm = false;          // RMSNorm on each head's q and k (Qwen3)
  int sliding_window = 0;        // Mistral: longest attention span (0 = none); longer sequences are refused
  template <class V> void visit(V& v) {
    v("arch", arch);
    v("vocab_size", vocab_size);
    v("n_positions", n_positions);
    v("n_embd", n_embd);
    v("n_layer", n_layer);
    v("n_head", n_head);
    v("dropout", dropout);
    v("layer_norm_epsilon", layer_norm_epsilon);
    v("tie_word_embeddings", tie_word_embeddings);
    v("model_type", model_type);
    v("n_kv_head", n_kv_head);
    v("head_dim", head_dim);
    v("intermediate_size", intermediate_size);
    v("rope_theta", rope_theta);
    v("rope_type", rope_type);
    v("rope_factor", rope_factor);
    v("rope_low_freq_factor", rope_low_freq_factor);
    v("rope_high_freq_factor", rope_high_freq_factor);
    v("rope_original_positions", rope_original_positions);
    v("qkv_bias", qkv_bias);
    v("o_bias", o_bias);
    v("mlp_bias", mlp_bias);
    v("qk_norm", qk_norm);
    v("sliding_window", sliding_window);
  }
  bool is_llama() const { return arch == "llama"; }
  int kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int dim_head() const { return head_dim > 0 ? head_dim : n_embd / n_head; }
  int mlp_width() const { return intermediate_size > 0 ? intermediate_size : 4 * n_embd; }
  // Fails with a message naming the field if the sizes are inconsistent.
  void validate() const;
  // Non-embedding parameters + the LM head (once, tied or not), as counted for FLOPs.
  int64_t num_parameters() const;
};

// config.json in Hugging Face form (GPT-2 or the Llama family's), and back.
// An unknown model_type or an option this implementation does not have is
// an error naming the key.
Json gpt_config_to_hf(const GPTConfig& config);
GPTConfig gpt_config_from_hf(const Json& hf, const std::string& source);

// Per-layer key/value cache for incremental decoding.
struct KVCache {
  std::vector<torch::Tensor> k, v;  // per layer [B, H_kv, capacity, D], fp32 or bf16 (values are rounded on append)
  torch::Tensor key_mask;           // [B, capacity] 1 where the position is a real token
  int64_t length = 0;               // positions filled
  // Writes a layer's new keys and values [B, H_kv, T, D] at `length` and
  // returns all of that layer's so far (`length` moves after the last layer).
  std::pair<torch::Tensor, torch::Tensor> append(int layer, const torch::Tensor& k, const torch::Tensor& v);
  // Each row becomes `times` consecutive copies of itself ([B] -> [B * times]):
  // a prompt's cache shared by several samples of it.
  void repeat_rows(int64_t times);
  // Row r becomes old row rows[r] ([B] -> [rows.size(0)]), e.g. each reply's
  // own copy of its prompt's keys and values. Differentiable: gradients of
  // the copies flow back to the shared rows.
  void select_rows(const torch::Tensor& rows);
};

// A low-rank update beside a frozen weight (LoRA, Hu et al. 2021):
// y += (x A) B * scale. Owned by policy/adapt.h's LoraAdapters; the layer
// only reads it.
struct LoraBranch {
  torch::Tensor A;  // [in, rank]
  torch::Tensor B;  // [rank, out], zero at the start
  double scale = 1.0;  // alpha / rank
};

// Hugging Face GPT-2's Conv1D: y = x W + b with W stored [in, out]. Also the
// Llama family's projections (without a bias unless the config asks).
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t in, int64_t out, bool with_bias = true);
  torch::Tensor forward(const torch::Tensor& x);  // [..., in] -> [..., out]
  torch::Tensor weight, bias;  // bias undefined when there is none
  std::optional<LoraBranch> lora;  // set while LoRA adapters are attached
  torch::Tensor low_precision_weight;  // set while LowPrecisionWeights lives: multiplied in its dtype instead of weight
  c10::optional<torch::ScalarType> compute_dtype;  // mixed precision (set_compute_dtype): the GEMM's dtype
};
TORCH_MODULE(Conv1D);

// Root-mean-square norm (Llama family): x / rms(x) * weight, in fp32.
class RMSNormImpl : public torch::nn::Module {
 public:
  RMSNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;

 private:
  double eps_;
};
TORCH_MODULE(RMSNorm);

// An untied output head: logits = hidden W^T with W [V, C] (as nn.Linear).
class LMHeadImpl : public torch::nn::Module {
 public:
  LMHeadImpl(int64_t vocab, int64_t width);
  torch::Tensor weight;
};
TORCH_MODULE(LMHead);

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

// The backbone ("GPT2Model" / "LlamaModel" in transformers): embeddings,
// blocks, final norm.
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
  // An empty cache for `batch` rows and up to `capacity` positions (see
  // GPTImpl::make_cache).
  KVCache make_cache(int64_t batch, int64_t capacity, c10::optional<torch::ScalarType> dtype = c10::nullopt);
  // Grows the vocabulary (e.g. to add chat tokens), keeping the old rows; new
  // rows start at the mean of the old ones.
  void resize_vocab(int new_vocab_size);

  torch::nn::Embedding wte{nullptr}, wpe{nullptr};  // wpe: GPT-2 only
  torch::nn::ModuleList h{nullptr};                   // Block (GPT-2) or LlamaBlock
  torch::nn::LayerNorm ln_f{nullptr};                 // GPT-2
  RMSNorm rms_f{nullptr};                             // the Llama family (named "ln_f" too)

 private:
  torch::Tensor rope_inv_freq_;  // the Llama family: RoPE frequencies [D / 2]
  GPTConfig config_;
};
TORCH_MODULE(Transformer);

// The language model ("GPT2LMHeadModel" / "LlamaForCausalLM"): backbone + LM
// head, tied to wte unless the config says otherwise.
class GPTImpl : public torch::nn::Module {
 public:
  explicit GPTImpl(const GPTConfig& config);
  // Logits [B, T, V].
  torch::Tensor forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask = {},
                        KVCache* cache = nullptr);
  // Hidden [B, T, C] -> logits [B, T, V] through the tied embedding (or the
  // untied head).
  torch::Tensor lm_head(const torch::Tensor& hidden);
  // An empty cache for `batch` rows and up to `capacity` positions, in the
  // model's dtype or in `dtype` (bf16 sampling on the CPU keeps it in
  // bfloat16: half the bytes that decoding reads every step).
  KVCache make_cache(int64_t batch, int64_t capacity, c10::optional<torch::ScalarType> dtype = c10::nullopt);
  // Grows the vocabulary of the embedding and of an untied head (see
  // TransformerImpl::resize_vocab).
  void resize_vocab(int new_vocab_size);
  const GPTConfig& config() const { return transformer->config(); }

  Transformer transformer{nullptr};
  LMHead head{nullptr};  // only when tie_word_embeddings is false ("lm_head.weight")
  torch::Tensor low_precision_head;  // set while LowPrecisionWeights lives: the LM head in its dtype
  c10::optional<torch::ScalarType> head_compute_dtype;  // mixed precision (set_compute_dtype): the head's GEMM dtype
};
TORCH_MODULE(GPT);

// For its lifetime, the model's projections (every Conv1D) and its LM head
// multiply in `dtype` (e.g. torch::kBFloat16) from copies of their weights
// made once; activations, norms, attention and the logits stay in the
// model's own precision (generate() also keeps the KV cache in `dtype` on
// the CPU). For sampling only: bf16 GEMMs run on
// AVX512-BF16/AMX CPUs and on GPUs at several times the fp32 rate, and the
// copies are dropped (and the trained weights untouched) when it ends.
class LowPrecisionWeights {
 public:
  LowPrecisionWeights(GPT model, torch::ScalarType dtype);
  ~LowPrecisionWeights();
  LowPrecisionWeights(const LowPrecisionWeights&) = delete;
  LowPrecisionWeights& operator=(const LowPrecisionWeights&) = delete;

 private:
  GPT model_;
};

// Mixed-precision training: every projection (Conv1D) of `model` and the
// LM head of any GPT in it multiply in `dtype` (torch::kBFloat16) from casts
// of the fp32 weights made in each forward pass, so gradients flow to the
// fp32 weights, which the optimiser updates as before; activations, norms,
// attention, the logits and the loss stay fp32. nullopt turns it off. On
// CPUs with AVX512-BF16/AMX and on GPUs the GEMMs (forward and backward)
// run several times faster; elsewhere bf16 is emulated and slower.
void set_compute_dtype(torch::nn::Module& model, c10::optional<torch::ScalarType> dtype);

// GPT-2's tanh GELU; on CPU fp32 through a fused kernel (policy/kernels.h).
torch::Tensor gelu_tanh(const torch::Tensor& x);

// GPT-2 initialisation: N(0, 0.02) weights, zero biases, residual
// projections scaled by 1/sqrt(2 * n_layer); deterministic for the seed.
void init_gpt_weights(torch::nn::Module& model, const GPTConfig& config, uint64_t seed);

// Parameters by Hugging Face name ("transformer.h.0.ln_1.weight", ...).
std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& model);

}  // namespace rlhf

// The Llama family's blocks (Llama 2/3.x, Mistral, Qwen2/2.5/3, SmolLM2,
// TinyLlama), with config switches rather than one class per family:
// rotary position embeddings (plain or "llama3"-scaled), RMSNorm, a
// SiLU-gated MLP, grouped-query attention, optional q/k/v biases (Qwen2) and
// q/k norms (Qwen3). Computes what transformers' implementations compute, to
// 1e-4 in fp32 (tests/test_hf_models.cpp against tools/make_hf_fixtures.py).
#pragma once

#include <string>

#include "common/config.h"
#include "policy/gpt.h"
#include "train/safetensors.h"

namespace rlhf {

// RoPE frequencies [D / 2] for the config (with llama3 scaling if set).
torch::Tensor rope_inv_freq(const GPTConfig& config);
// cos and sin [B, T, D] for positions [B, T] (or [1, T]).
std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& inv_freq, const torch::Tensor& positions);
// x [B, H, T, D] rotated: x * cos + rotate_half(x) * sin.
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

class LlamaAttentionImpl : public torch::nn::Module {
 public:
  LlamaAttentionImpl(const GPTConfig& config, int layer);
  // x [B, T, C]; bias as in AttentionImpl; cos/sin [B or 1, T, D].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, const torch::Tensor& cos,
                        const torch::Tensor& sin, KVCache* cache);
  Conv1D q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RMSNorm q_norm{nullptr}, k_norm{nullptr};  // Qwen3 only

 private:
  int n_head_, n_kv_head_, head_dim_, layer_;
  double dropout_;
};
TORCH_MODULE(LlamaAttention);

class LlamaMLPImpl : public torch::nn::Module {
 public:
  explicit LlamaMLPImpl(const GPTConfig& config);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  Conv1D gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(LlamaMLP);

class LlamaBlockImpl : public torch::nn::Module {
 public:
  LlamaBlockImpl(const GPTConfig& config, int layer);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, const torch::Tensor& cos,
                        const torch::Tensor& sin, KVCache* cache);
  RMSNorm ln_1{nullptr}, ln_2{nullptr};  // input_layernorm, post_attention_layernorm
  LlamaAttention attn{nullptr};
  LlamaMLP mlp{nullptr};
};
TORCH_MODULE(LlamaBlock);

// True for the model_types read as the Llama family.
bool is_llama_family(const std::string& model_type);
GPTConfig llama_config_from_hf(const Json& hf, const std::string& source);
Json llama_config_to_hf(const GPTConfig& config);

// Checkpoint tensors between Hugging Face's names and layouts
// ("model.layers.0.self_attn.q_proj.weight", [out, in]) and ours
// ("transformer.h.0.attn.q_proj.weight", [in, out]). Names it does not know
// pass through unchanged (the load then says which tensor is unexpected).
TensorMap llama_weights_from_hf(const TensorMap& hf);
TensorMap llama_weights_to_hf(const TensorMap& ours);
// One name, ours -> Hugging Face's (e.g. for PEFT adapter keys).
std::string llama_name_to_hf(const std::string& ours);

}  // namespace rlhf

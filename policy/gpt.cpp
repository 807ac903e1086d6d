#include "policy/gpt.h"

#include <torch/version.h>
#include <torch/autograd.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/functional/dropout.h>

#include <cmath>

#include "common/error.h"
#include "policy/attention.h"
#include "policy/kernels.h"
#include "policy/llama.h"
#include "policy/parallel.h"

namespace rlhf {
namespace {

// tanh-GELU through the fused CPU kernel (fp32, CPU); LibTorch's elsewhere.
struct GeluTanh : torch::autograd::Function<GeluTanh> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    torch::Tensor xc = x.contiguous();
    ctx->save_for_backward({xc});
    torch::Tensor y = torch::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    parallel_rows(0, xc.numel(), 32768, [&](int64_t b, int64_t e) {
      kernels::gelu_tanh_forward(xp + b, yp + b, e - b);
    });
    return y;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grads) {
    torch::Tensor x = ctx->get_saved_variables()[0];
    torch::Tensor g = grads[0].contiguous();
    torch::Tensor dx = torch::empty_like(x);
    const float *gp = g.data_ptr<float>(), *xp = x.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    parallel_rows(0, x.numel(), 32768, [&](int64_t b, int64_t e) {
      kernels::gelu_tanh_backward(gp + b, xp + b, dp + b, e - b);
    });
    return {dx};
  }
};


}  // namespace

torch::Tensor gelu_tanh(const torch::Tensor& x) {
  if (x.device().is_cpu() && x.scalar_type() == torch::kFloat) return GeluTanh::apply(x);
  return torch::gelu(x, "tanh");
}

void GPTConfig::validate() const {
  auto bad = [](const char* key, auto value, const char* why) {
    fail(ErrorKind::kConfig, "model.", key, " = ", value, ": ", why);
  };
  if (arch != "gpt2" && arch != "llama") bad("arch", arch, "must be \"gpt2\" or \"llama\"");
  if (vocab_size < 1) bad("vocab_size", vocab_size, "must be positive");
  if (n_positions < 2) bad("n_positions", n_positions, "must be at least 2");
  if (n_layer < 1) bad("n_layer", n_layer, "must be at least 1");
  if (n_head < 1) bad("n_head", n_head, "must be at least 1");
  if (n_embd < 1 || (head_dim == 0 && n_embd % n_head != 0)) {
    bad("n_embd", n_embd, "must be a positive multiple of n_head (or set head_dim)");
  }
  if (dropout < 0 || dropout >= 1) bad("dropout", dropout, "must be in [0, 1)");
  if (!is_llama()) {
    if (n_kv_head != 0 && n_kv_head != n_head) bad("n_kv_head", n_kv_head, "GPT-2 has as many key/value heads as heads");
    if (head_dim != 0 && head_dim != n_embd / n_head) bad("head_dim", head_dim, "GPT-2's head size is n_embd / n_head");
    return;
  }
  if (!is_llama_family(model_type)) bad("model_type", model_type, "must be llama, mistral, qwen2 or qwen3");
  if (kv_heads() < 1 || n_head % kv_heads() != 0) bad("n_kv_head", n_kv_head, "must divide n_head");
  if (dim_head() < 2 || dim_head() % 2 != 0) bad("head_dim", dim_head(), "must be even (RoPE rotates pairs)");
  if (rope_type != "default" && rope_type != "llama3") bad("rope_type", rope_type, "must be \"default\" or \"llama3\"");
  if (rope_theta <= 0) bad("rope_theta", rope_theta, "must be positive");
  if (model_type == "qwen2" && !qkv_bias) bad("qkv_bias", qkv_bias, "Qwen2 has q/k/v biases");
}

int64_t GPTConfig::num_parameters() const {
  // The token embedding is a lookup (no FLOPs); the head, tied or not, counts once.
  const int64_t C = n_embd, V = vocab_size;
  if (!is_llama()) {
    const int64_t per_block = 12 * C * C + 13 * C;  // attn 4C^2+4C, mlp 8C^2+5C, 2 norms 4C
    return n_layer * per_block + 2 * C + V * C;
  }
  const int64_t Q = static_cast<int64_t>(n_head) * dim_head(), K = static_cast<int64_t>(kv_heads()) * dim_head();
  const int64_t I = mlp_width();
  int64_t per_block = C * Q + 2 * C * K + Q * C + 3 * C * I + 2 * C;
  if (qkv_bias) per_block += Q + 2 * K;
  if (o_bias) per_block += C;
  if (mlp_bias) per_block += 2 * I + C;
  if (qk_norm) per_block += 2 * dim_head();
  return n_layer * per_block + C + V * C;
}

Json gpt_config_to_hf(const GPTConfig& c) {
  if (c.is_llama()) return llama_config_to_hf(c);
  return Json{{"architectures", {"GPT2LMHeadModel"}},
              {"model_type", "gpt2"},
              {"vocab_size", c.vocab_size},
              {"n_positions", c.n_positions},
              {"n_ctx", c.n_positions},
              {"n_embd", c.n_embd},
              {"n_layer", c.n_layer},
              {"n_head", c.n_head},
              {"n_inner", nullptr},
              {"activation_function", "gelu_new"},
              {"resid_pdrop", c.dropout},
              {"embd_pdrop", c.dropout},
              {"attn_pdrop", c.dropout},
              {"layer_norm_epsilon", c.layer_norm_epsilon},
              {"initializer_range", 0.02},
              {"scale_attn_weights", true},
              {"tie_word_embeddings", c.tie_word_embeddings},
              {"torch_dtype", "float32"}};
}

GPTConfig gpt_config_from_hf(const Json& hf, const std::string& source) {
  auto need_int = [&](const char* key) -> int {
    if (!hf.contains(key) || !hf[key].is_number_integer()) {
      fail(ErrorKind::kCorrupt, source, ": \"", key, "\" is missing or not an integer");
    }
    return hf[key].get<int>();
  };
  const std::string type = hf.contains("model_type") && hf["model_type"].is_string() ? hf["model_type"].get<std::string>()
                                                                                     : std::string("gpt2");
  if (is_llama_family(type)) return llama_config_from_hf(hf, source);
  if (type != "gpt2") {
    fail(ErrorKind::kData, source, ": model_type \"", type,
         "\" is not supported; supported are gpt2, llama, mistral, qwen2 and qwen3");
  }
  const std::string act = hf.value("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
    fail(ErrorKind::kData, source, ": activation_function \"", act,
         "\" is not supported (GPT-2 uses \"gelu_new\")");
  }
  // Options that change the computation and that this implementation does
  // not have: refuse them by name rather than load a silently wrong model.
  auto refuse_if = [&](const char* key, const Json& unsupported, const char* why) {
    if (hf.contains(key) && hf[key] == unsupported) {
      fail(ErrorKind::kData, source, ": ", key, " = ", unsupported.dump(), " is not supported: ", why);
    }
  };
  refuse_if("scale_attn_by_inverse_layer_idx", true, "attention scores are scaled by 1/sqrt(head size) only");
  refuse_if("scale_attn_weights", false, "attention scores are always scaled by 1/sqrt(head size)");
  refuse_if("add_cross_attention", true, "this is a decoder-only model");
  GPTConfig c;
  c.tie_word_embeddings = !(hf.contains("tie_word_embeddings") && hf["tie_word_embeddings"] == false);
  c.vocab_size = need_int("vocab_size");
  c.n_positions = hf.contains("n_positions") ? need_int("n_positions") : need_int("n_ctx");
  c.n_embd = need_int("n_embd");
  c.n_layer = need_int("n_layer");
  c.n_head = need_int("n_head");
  if (hf.contains("n_inner") && !hf["n_inner"].is_null() && hf["n_inner"] != 4 * c.n_embd) {
    fail(ErrorKind::kData, source, ": n_inner other than 4 * n_embd is not supported");
  }
  if (hf.contains("resid_pdrop") && hf["resid_pdrop"].is_number()) c.dropout = hf["resid_pdrop"].get<double>();
  if (hf.contains("layer_norm_epsilon") && hf["layer_norm_epsilon"].is_number()) {
    c.layer_norm_epsilon = hf["layer_norm_epsilon"].get<double>();
  }
  c.validate();
  return c;
}

Conv1DImpl::Conv1DImpl(int64_t in, int64_t out, bool with_bias) {
  weight = register_parameter("weight", torch::empty({in, out}));
  if (with_bias) bias = register_parameter("bias", torch::zeros({out}));
}

torch::Tensor Conv1DImpl::forward(const torch::Tensor& x) {
  auto out_shape = x.sizes().vec();
  out_shape.back() = weight.size(1);
  torch::Tensor x2 = x.reshape({-1, weight.size(0)});
  torch::Tensor y;
  if (low_precision_weight.defined()) {
    y = torch::mm(x2.to(low_precision_weight.scalar_type()), low_precision_weight).to(x.scalar_type());
    if (bias.defined()) y.add_(bias);
  } else if (compute_dtype && *compute_dtype != weight.scalar_type()) {
    y = torch::mm(x2.to(*compute_dtype), weight.to(*compute_dtype)).to(x.scalar_type());
    if (bias.defined()) y = y + bias;
  } else {
    y = bias.defined() ? torch::addmm(bias, x2, weight) : torch::mm(x2, weight);
  }
  if (lora) y = torch::addmm(y, torch::mm(x2, lora->A), lora->B, 1.0, lora->scale);
  return y.view(out_shape);
}

AttentionImpl::AttentionImpl(const GPTConfig& c, int layer)
    : n_head_(c.n_head), layer_(layer), dropout_(c.dropout) {
  c_attn = register_module("c_attn", Conv1D(c.n_embd, 3 * c.n_embd));
  c_proj = register_module("c_proj", Conv1D(c.n_embd, c.n_embd));
}

std::pair<torch::Tensor, torch::Tensor> KVCache::append(int layer, const torch::Tensor& new_k,
                                                        const torch::Tensor& new_v) {
  const int64_t T = new_k.size(2);
  k[layer].narrow(2, length, T).copy_(new_k);
  v[layer].narrow(2, length, T).copy_(new_v);
  return {k[layer].narrow(2, 0, length + T), v[layer].narrow(2, 0, length + T)};
}

void KVCache::repeat_rows(int64_t times) {
  if (times == 1) return;
  for (auto& t : k) t = t.repeat_interleave(times, 0);
  for (auto& t : v) t = t.repeat_interleave(times, 0);
  key_mask = key_mask.repeat_interleave(times, 0);
}

void KVCache::select_rows(const torch::Tensor& rows) {
  for (auto& t : k) t = t.index_select(0, rows);
  for (auto& t : v) t = t.index_select(0, rows);
  key_mask = key_mask.index_select(0, rows);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias,
                                     KVCache* cache) {
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), D = C / n_head_;
  // One copy into [3, B, H, T, D]; q, k, v are then contiguous views.
  auto qkv = c_attn(x).view({B, T, 3, n_head_, D}).permute({2, 0, 3, 1, 4}).contiguous().unbind(0);
  torch::Tensor q = qkv[0], k = qkv[1], v = qkv[2];
  if (cache != nullptr) std::tie(k, v) = cache->append(layer_, k, v);
  const double p = is_training() ? dropout_ : 0.0;
  const bool decoding = cache != nullptr && T == 1 && p == 0 && bias.defined() && x.device().is_cpu() &&
                        x.scalar_type() == torch::kFloat && !torch::GradMode::is_enabled();
  torch::Tensor y = decoding ? attend_cached_query(q, cache->k[layer_], cache->v[layer_], cache->length + 1, bias)
                             : attend(q, k.to(q.scalar_type()), v.to(q.scalar_type()), bias, /*causal=*/true, p);
  y = y.transpose(1, 2).reshape({B, T, C});
  y = c_proj(y);
  if (p > 0) y = torch::dropout(y, p, true);
  return y;
}

MLPImpl::MLPImpl(const GPTConfig& c) : dropout_(c.dropout) {
  c_fc = register_module("c_fc", Conv1D(c.n_embd, 4 * c.n_embd));
  c_proj = register_module("c_proj", Conv1D(4 * c.n_embd, c.n_embd));
}

torch::Tensor MLPImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = c_proj(gelu_tanh(c_fc(x)));
  if (is_training() && dropout_ > 0) y = torch::dropout(y, dropout_, true);
  return y;
}

BlockImpl::BlockImpl(const GPTConfig& c, int layer) {
  auto ln = torch::nn::LayerNormOptions({c.n_embd}).eps(c.layer_norm_epsilon);
  ln_1 = register_module("ln_1", torch::nn::LayerNorm(ln));
  attn = register_module("attn", Attention(c, layer));
  ln_2 = register_module("ln_2", torch::nn::LayerNorm(ln));
  mlp = register_module("mlp", MLP(c));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& bias, KVCache* cache) {
  torch::Tensor h = x + attn(ln_1(x), bias, cache);
  return h + mlp(ln_2(h));
}

RMSNormImpl::RMSNormImpl(int64_t dim, double eps) : eps_(eps) {
  weight = register_parameter("weight", torch::ones({dim}));
}

torch::Tensor RMSNormImpl::forward(const torch::Tensor& x) {
  const torch::Tensor xf = x.to(torch::kFloat);
  const torch::Tensor normed = xf * torch::rsqrt(xf.pow(2).mean(-1, /*keepdim=*/true) + eps_);
  return weight * normed.to(x.scalar_type());
}

LMHeadImpl::LMHeadImpl(int64_t vocab, int64_t width) {
  weight = register_parameter("weight", torch::empty({vocab, width}));
}

TransformerImpl::TransformerImpl(const GPTConfig& c) : config_(c) {
  c.validate();
  wte = register_module("wte", torch::nn::Embedding(c.vocab_size, c.n_embd));
  if (!c.is_llama()) wpe = register_module("wpe", torch::nn::Embedding(c.n_positions, c.n_embd));
  h = register_module("h", torch::nn::ModuleList());
  for (int i = 0; i < c.n_layer; ++i) {
    if (c.is_llama()) {
      h->push_back(LlamaBlock(c, i));
    } else {
      h->push_back(Block(c, i));
    }
  }
  if (c.is_llama()) {
    rms_f = register_module("ln_f", RMSNorm(c.n_embd, c.layer_norm_epsilon));
    rope_inv_freq_ = rope_inv_freq(c);
  } else {
    ln_f = register_module("ln_f", torch::nn::LayerNorm(
                                       torch::nn::LayerNormOptions({c.n_embd}).eps(c.layer_norm_epsilon)));
  }
}

torch::Tensor TransformerImpl::forward(const torch::Tensor& input_ids,
                                       const torch::Tensor& attention_mask, KVCache* cache) {
  const int64_t B = input_ids.size(0), T = input_ids.size(1);
  const int64_t past = cache != nullptr ? cache->length : 0;
  RLHF_CHECK(past + T <= config_.n_positions, "sequence of ", past + T,
             " tokens exceeds the context length ", config_.n_positions);
  if (config_.sliding_window > 0 && past + T > config_.sliding_window) {
    fail(ErrorKind::kData, "a sequence of ", past + T, " tokens is longer than the model's sliding window (",
         config_.sliding_window, "); windowed attention is not implemented, so it would be computed wrongly");
  }
  const auto long_opts = input_ids.options().dtype(torch::kLong);
  torch::Tensor pos, bias;
  if (!attention_mask.defined() && cache == nullptr) {
    pos = torch::arange(T, long_opts).unsqueeze(0);  // plain causal: no bias needed
  } else {
    torch::Tensor mask = attention_mask.defined() ? attention_mask.to(torch::kLong)
                                                  : torch::ones({B, T}, long_opts);
    torch::Tensor keys = mask;
    torch::Tensor prior = torch::zeros({B, 1}, long_opts);
    if (cache != nullptr) {
      cache->key_mask.narrow(1, past, T).copy_(mask);
      keys = cache->key_mask.narrow(1, 0, past + T);
      if (past > 0) prior = cache->key_mask.narrow(1, 0, past).sum(1, /*keepdim=*/true);
    }
    pos = (prior + mask.cumsum(1) - 1).clamp_min(0);
    // Query i (absolute past + i) sees key j when j <= past + i and j is real.
    torch::Tensor qi = torch::arange(past, past + T, long_opts).view({T, 1});
    torch::Tensor kj = torch::arange(past + T, long_opts).view({1, past + T});
    torch::Tensor allowed = (kj <= qi).view({1, 1, T, past + T}) &
                            keys.to(torch::kBool).view({B, 1, 1, past + T});
    bias = torch::zeros(allowed.sizes(), input_ids.options().dtype(torch::kFloat))
               .masked_fill_(allowed.logical_not(), kMasked);
  }
  if (config_.is_llama()) {
    torch::Tensor x = wte(input_ids);
    const auto [cos, sin] = rope_cos_sin(rope_inv_freq_, pos);
    for (const auto& block : *h) x = block->as<LlamaBlock>()->forward(x, bias, cos, sin, cache);
    if (cache != nullptr) cache->length += T;
    return rms_f(x);
  }
  torch::Tensor x = wte(input_ids) + wpe(pos);
  if (is_training() && config_.dropout > 0) x = torch::dropout(x, config_.dropout, true);
  for (const auto& block : *h) x = block->as<Block>()->forward(x, bias, cache);
  if (cache != nullptr) cache->length += T;
  return ln_f(x);
}

void TransformerImpl::resize_vocab(int new_vocab_size) {
  const int old = config_.vocab_size;
  if (new_vocab_size == old) return;
  RLHF_CHECK(new_vocab_size > old, "shrinking the vocabulary is not supported");
  torch::NoGradGuard no_grad;
  const torch::Tensor old_weight = wte->weight;
  auto fresh = torch::nn::Embedding(new_vocab_size, config_.n_embd);
  fresh->to(old_weight.device(), old_weight.scalar_type());
  fresh->weight.narrow(0, 0, old).copy_(old_weight);
  fresh->weight.narrow(0, old, new_vocab_size - old).copy_(
      old_weight.mean(0, /*keepdim=*/true).expand({new_vocab_size - old, config_.n_embd}));
  wte = replace_module("wte", fresh);
  config_.vocab_size = new_vocab_size;
}

GPTImpl::GPTImpl(const GPTConfig& config) {
  transformer = register_module("transformer", Transformer(config));
  if (!config.tie_word_embeddings) head = register_module("lm_head", LMHead(config.vocab_size, config.n_embd));
}

void GPTImpl::resize_vocab(int new_vocab_size) {
  const int old = config().vocab_size;
  transformer->resize_vocab(new_vocab_size);
  if (!head || new_vocab_size == old) return;
  torch::NoGradGuard no_grad;
  const torch::Tensor w = head->weight;
  auto fresh = LMHead(new_vocab_size, w.size(1));
  fresh->to(w.device(), w.scalar_type());
  fresh->weight.narrow(0, 0, old).copy_(w);
  fresh->weight.narrow(0, old, new_vocab_size - old).copy_(w.mean(0, true).expand({new_vocab_size - old, w.size(1)}));
  head = replace_module("lm_head", fresh);
}

torch::Tensor GPTImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                               KVCache* cache) {
  return lm_head(transformer(input_ids, attention_mask, cache));
}

torch::Tensor GPTImpl::lm_head(const torch::Tensor& hidden) {
  if (low_precision_head.defined()) {
    return at::linear(hidden.to(low_precision_head.scalar_type()), low_precision_head).to(hidden.scalar_type());
  }
  const torch::Tensor& w = head ? head->weight : transformer->wte->weight;
  if (head_compute_dtype && *head_compute_dtype != w.scalar_type()) {
    return at::linear(hidden.to(*head_compute_dtype), w.to(*head_compute_dtype)).to(hidden.scalar_type());
  }
  return at::linear(hidden, w);
}

void set_compute_dtype(torch::nn::Module& model, c10::optional<torch::ScalarType> dtype) {
  auto set = [&](torch::nn::Module& m) {
    if (auto* conv = dynamic_cast<Conv1DImpl*>(&m)) conv->compute_dtype = dtype;
    if (auto* gpt = dynamic_cast<GPTImpl*>(&m)) gpt->head_compute_dtype = dtype;
  };
  set(model);
  for (const auto& m : model.modules(/*include_self=*/false)) set(*m);
}

LowPrecisionWeights::LowPrecisionWeights(GPT model, torch::ScalarType dtype) : model_(std::move(model)) {
  torch::NoGradGuard no_grad;
  for (const auto& m : model_->modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<Conv1DImpl*>(m.get())) conv->low_precision_weight = conv->weight.detach().to(dtype);
  }
  const torch::Tensor& head = model_->head ? model_->head->weight : model_->transformer->wte->weight;
  model_->low_precision_head = head.detach().to(dtype);
}

LowPrecisionWeights::~LowPrecisionWeights() {
  for (const auto& m : model_->modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<Conv1DImpl*>(m.get())) conv->low_precision_weight = torch::Tensor();
  }
  model_->low_precision_head = torch::Tensor();
}

KVCache TransformerImpl::make_cache(int64_t batch, int64_t capacity, c10::optional<torch::ScalarType> dtype) {
  const torch::Tensor& w = wte->weight;
  KVCache cache;
  const int64_t D = config_.dim_head(), H = config_.kv_heads();
  const auto options = w.options().dtype(dtype.value_or(w.scalar_type()));
  for (int i = 0; i < config_.n_layer; ++i) {
    cache.k.push_back(torch::zeros({batch, H, capacity, D}, options));
    cache.v.push_back(torch::zeros({batch, H, capacity, D}, options));
  }
  cache.key_mask = torch::zeros({batch, capacity}, w.options().dtype(torch::kLong));
  return cache;
}

KVCache GPTImpl::make_cache(int64_t batch, int64_t capacity, c10::optional<torch::ScalarType> dtype) {
  return transformer->make_cache(batch, capacity, dtype);
}

void init_gpt_weights(torch::nn::Module& model, const GPTConfig& config, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const double residual_std = 0.02 / std::sqrt(2.0 * config.n_layer);
  for (auto& [name, p] : named_parameters(model)) {
    const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
    const bool is_norm = name.find(".ln_") != std::string::npos || name.find("_norm.") != std::string::npos;
    torch::Tensor cpu = torch::empty(p.sizes(), torch::kFloat);
    if (is_norm) {
      cpu.fill_(is_bias ? 0.0 : 1.0);
    } else if (is_bias) {
      cpu.zero_();
    } else {
      const bool residual = name.find("c_proj.weight") != std::string::npos ||
                            name.find("o_proj.weight") != std::string::npos ||
                            name.find("down_proj.weight") != std::string::npos;
      cpu.normal_(0.0, residual ? residual_std : 0.02, gen);
    }
    p.copy_(cpu);
  }
}

std::vector<std::pair<std::string, torch::Tensor>> named_parameters(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model.named_parameters(/*recurse=*/true)) out.emplace_back(item.key(), item.value());
  return out;
}

}  // namespace rlhf

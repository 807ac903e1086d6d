#include "policy/llama.h"

#include <torch/torch.h>

#include <cmath>

#include "common/error.h"
#include "policy/attention.h"

namespace rlhf {

torch::Tensor rope_inv_freq(const GPTConfig& c) {
  const int64_t D = c.dim_head();
  torch::Tensor inv = 1.0 / torch::pow(torch::tensor(c.rope_theta, torch::kDouble),
                                       torch::arange(0, D, 2, torch::kLong).to(torch::kFloat).to(torch::kDouble) /
                                           static_cast<double>(D));
  inv = inv.to(torch::kFloat);
  if (c.rope_type == "llama3") {
    // Llama 3.1's scaling: long wavelengths slowed by `factor`, short ones
    // kept, and a smooth blend between (transformers' _compute_llama3_parameters).
    const double old_len = c.rope_original_positions;
    const double low_wavelen = old_len / c.rope_low_freq_factor, high_wavelen = old_len / c.rope_high_freq_factor;
    const torch::Tensor wavelen = 2 * M_PI / inv;
    torch::Tensor scaled = torch::where(wavelen > low_wavelen, inv / c.rope_factor, inv);
    const torch::Tensor smooth =
        (old_len / wavelen - c.rope_low_freq_factor) / (c.rope_high_freq_factor - c.rope_low_freq_factor);
    const torch::Tensor smoothed = (1 - smooth) * scaled / c.rope_factor + smooth * scaled;
    const torch::Tensor medium = (wavelen < high_wavelen).logical_not() & (wavelen > low_wavelen).logical_not();
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

std::pair<torch::Tensor, torch::Tensor> rope_cos_sin(const torch::Tensor& inv_freq, const torch::Tensor& positions) {
  const torch::Tensor freqs = positions.to(torch::kFloat).unsqueeze(-1) * inv_freq.to(positions.device());
  const torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  const torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.unsqueeze(1).to(x.scalar_type()) + rotated * sin.unsqueeze(1).to(x.scalar_type());
}

LlamaAttentionImpl::LlamaAttentionImpl(const GPTConfig& c, int layer)
    : n_head_(c.n_head), n_kv_head_(c.kv_heads()), head_dim_(c.dim_head()), layer_(layer), dropout_(c.dropout) {
  q_proj = register_module("q_proj", Conv1D(c.n_embd, n_head_ * head_dim_, c.qkv_bias));
  k_proj = register_module("k_proj", Conv1D(c.n_embd, n_kv_head_ * head_dim_, c.qkv_bias));
  v_proj = register_module("v_proj", Conv1D(c.n_embd, n_kv_head_ * head_dim_, c.qkv_bias));
  o_proj = register_module("o_proj", Conv1D(n_head_ * head_dim_, c.n_embd, c.o_bias));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", RMSNorm(head_dim_, c.layer_norm_epsilon));
    k_norm = register_module("k_norm", RMSNorm(head_dim_, c.layer_norm_epsilon));
  }
}

torch::Tensor LlamaAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias, const torch::Tensor& cos,
                                          const torch::Tensor& sin, KVCache* cache) {
  const int64_t B = x.size(0), T = x.size(1), H = n_head_, Hk = n_kv_head_, D = head_dim_;
  torch::Tensor q = q_proj(x).view({B, T, H, D});
  torch::Tensor k = k_proj(x).view({B, T, Hk, D});
  if (q_norm) {
    q = q_norm(q);
    k = k_norm(k);
  }
  q = apply_rope(q.transpose(1, 2), cos, sin);
  k = apply_rope(k.transpose(1, 2), cos, sin);
  torch::Tensor v = v_proj(x).view({B, T, Hk, D}).transpose(1, 2);
  if (cache != nullptr) std::tie(k, v) = cache->append(layer_, k, v);
  const double p = is_training() ? dropout_ : 0.0;
  torch::Tensor y;
  if (cache != nullptr && T == 1 && H == Hk && p == 0 && bias.defined() && x.device().is_cpu() &&
      x.scalar_type() == torch::kFloat && !torch::GradMode::is_enabled()) {
    y = attend_cached_query(q, cache->k[layer_], cache->v[layer_], cache->length + 1, bias);
  } else {
    k = k.to(q.scalar_type());
    v = v.to(q.scalar_type());
    if (Hk < H) {  // grouped-query attention: each key/value head serves H / Hk query heads
      k = k.repeat_interleave(H / Hk, 1);
      v = v.repeat_interleave(H / Hk, 1);
    }
    y = attend(q, k, v, bias, /*causal=*/true, p);
  }
  return o_proj(y.transpose(1, 2).reshape({B, T, H * D}));
}

LlamaMLPImpl::LlamaMLPImpl(const GPTConfig& c) {
  gate_proj = register_module("gate_proj", Conv1D(c.n_embd, c.mlp_width(), c.mlp_bias));
  up_proj = register_module("up_proj", Conv1D(c.n_embd, c.mlp_width(), c.mlp_bias));
  down_proj = register_module("down_proj", Conv1D(c.mlp_width(), c.n_embd, c.mlp_bias));
}

torch::Tensor LlamaMLPImpl::forward(const torch::Tensor& x) {
  return down_proj(torch::silu(gate_proj(x)) * up_proj(x));
}

LlamaBlockImpl::LlamaBlockImpl(const GPTConfig& c, int layer) {
  ln_1 = register_module("ln_1", RMSNorm(c.n_embd, c.layer_norm_epsilon));
  attn = register_module("attn", LlamaAttention(c, layer));
  ln_2 = register_module("ln_2", RMSNorm(c.n_embd, c.layer_norm_epsilon));
  mlp = register_module("mlp", LlamaMLP(c));
}

torch::Tensor LlamaBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& bias, const torch::Tensor& cos,
                                      const torch::Tensor& sin, KVCache* cache) {
  const torch::Tensor h = x + attn(ln_1(x), bias, cos, sin, cache);
  return h + mlp(ln_2(h));
}

bool is_llama_family(const std::string& model_type) {
  return model_type == "llama" || model_type == "mistral" || model_type == "qwen2" || model_type == "qwen3";
}

GPTConfig llama_config_from_hf(const Json& hf, const std::string& source) {
  auto has = [&](const char* key) { return hf.contains(key) && !hf[key].is_null(); };
  auto need_int = [&](const char* key) -> int {
    if (!has(key) || !hf[key].is_number_integer()) {
      fail(ErrorKind::kCorrupt, source, ": \"", key, "\" is missing or not an integer");
    }
    return hf[key].get<int>();
  };
  auto number = [&](const char* key, double fallback) -> double {
    if (!has(key)) return fallback;
    if (!hf[key].is_number()) fail(ErrorKind::kCorrupt, source, ": \"", key, "\" must be a number");
    return hf[key].get<double>();
  };
  auto flag = [&](const char* key, bool fallback) -> bool {
    if (!has(key)) return fallback;
    if (!hf[key].is_boolean()) fail(ErrorKind::kCorrupt, source, ": \"", key, "\" must be true or false");
    return hf[key].get<bool>();
  };
  const std::string type = hf.value("model_type", "");
  const std::string act = hf.value("hidden_act", "silu");
  if (act != "silu") fail(ErrorKind::kData, source, ": hidden_act \"", act, "\" is not supported (the Llama family uses silu)");
  GPTConfig c;
  c.arch = "llama";
  c.model_type = type;
  c.vocab_size = need_int("vocab_size");
  c.n_embd = need_int("hidden_size");
  c.n_layer = need_int("num_hidden_layers");
  c.n_head = need_int("num_attention_heads");
  c.n_kv_head = has("num_key_value_heads") ? need_int("num_key_value_heads") : c.n_head;
  c.head_dim = has("head_dim") ? need_int("head_dim") : 0;
  if (c.head_dim > 0 && c.n_head > 0 && c.head_dim * c.n_head == c.n_embd) c.head_dim = 0;  // the usual size
  c.intermediate_size = need_int("intermediate_size");
  c.n_positions = need_int("max_position_embeddings");
  c.layer_norm_epsilon = number("rms_norm_eps", 1e-6);
  c.rope_theta = number("rope_theta", 10000);
  c.dropout = number("attention_dropout", 0);
  c.tie_word_embeddings = flag("tie_word_embeddings", false);  // transformers' default for these families
  if (has("rope_scaling")) {
    const Json& rs = hf["rope_scaling"];
    if (!rs.is_object()) fail(ErrorKind::kCorrupt, source, ": \"rope_scaling\" must be an object or null");
    const std::string rt = rs.value("rope_type", rs.value("type", std::string("default")));
    if (rt == "llama3") {
      c.rope_type = "llama3";
      auto need = [&](const char* key) {
        if (!rs.contains(key) || !rs[key].is_number()) {
          fail(ErrorKind::kCorrupt, source, ": rope_scaling.", key, " is missing or not a number");
        }
        return rs[key].get<double>();
      };
      c.rope_factor = need("factor");
      c.rope_low_freq_factor = need("low_freq_factor");
      c.rope_high_freq_factor = need("high_freq_factor");
      c.rope_original_positions = static_cast<int>(need("original_max_position_embeddings"));
    } else if (rt != "default") {
      fail(ErrorKind::kData, source, ": rope_scaling.rope_type \"", rt,
           "\" is not supported (only \"default\" and \"llama3\")");
    }
  }
  if (type == "qwen2") {
    c.qkv_bias = true;  // Qwen2's q/k/v always carry biases, its output projection none
  } else {
    c.qkv_bias = c.o_bias = flag("attention_bias", false);
  }
  c.mlp_bias = flag("mlp_bias", false);
  c.qk_norm = type == "qwen3";
  if ((type == "qwen2" || type == "qwen3") && flag("use_sliding_window", false)) {
    fail(ErrorKind::kData, source, ": use_sliding_window = true is not supported (windowed attention in some layers)");
  }
  if (type == "mistral" && has("sliding_window")) c.sliding_window = need_int("sliding_window");
  c.validate();
  return c;
}

Json llama_config_to_hf(const GPTConfig& c) {
  const std::string& t = c.model_type;
  const char* arch = t == "mistral" ? "MistralForCausalLM"
                     : t == "qwen2" ? "Qwen2ForCausalLM"
                     : t == "qwen3" ? "Qwen3ForCausalLM"
                                    : "LlamaForCausalLM";
  Json hf = {{"architectures", {arch}},
             {"model_type", t},
             {"vocab_size", c.vocab_size},
             {"hidden_size", c.n_embd},
             {"intermediate_size", c.mlp_width()},
             {"num_hidden_layers", c.n_layer},
             {"num_attention_heads", c.n_head},
             {"num_key_value_heads", c.kv_heads()},
             {"head_dim", c.dim_head()},
             {"max_position_embeddings", c.n_positions},
             {"rms_norm_eps", c.layer_norm_epsilon},
             {"rope_theta", c.rope_theta},
             {"hidden_act", "silu"},
             {"attention_dropout", c.dropout},
             {"tie_word_embeddings", c.tie_word_embeddings},
             {"initializer_range", 0.02},
             {"torch_dtype", "float32"}};
  hf["rope_scaling"] = c.rope_type == "llama3" ? Json{{"rope_type", "llama3"},
                                                     {"factor", c.rope_factor},
                                                     {"low_freq_factor", c.rope_low_freq_factor},
                                                     {"high_freq_factor", c.rope_high_freq_factor},
                                                     {"original_max_position_embeddings", c.rope_original_positions}}
                                               : Json();
  if (t != "qwen2") hf["attention_bias"] = c.qkv_bias;
  if (t == "llama") hf["mlp_bias"] = c.mlp_bias;
  if (t == "mistral") hf["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json();
  if (t == "qwen2" || t == "qwen3") hf["use_sliding_window"] = false;
  return hf;
}

namespace {

// Pieces of a name, ours <-> Hugging Face's.
const std::pair<const char*, const char*> kRenames[] = {
    {"transformer.wte.", "model.embed_tokens."},
    {"transformer.ln_f.", "model.norm."},
    {"transformer.h.", "model.layers."},
    {".attn.", ".self_attn."},
    {".ln_1.", ".input_layernorm."},
    {".ln_2.", ".post_attention_layernorm."},
};

std::string rename(std::string name, bool to_hf) {
  for (const auto& [ours, theirs] : kRenames) {
    const std::string from = to_hf ? ours : theirs, to = to_hf ? theirs : ours;
    const size_t at = name.find(from);
    if (at != std::string::npos) name.replace(at, from.size(), to);
  }
  return name;
}

// Projections are [out, in] in transformers' nn.Linear and [in, out] in our Conv1D.
bool transposed(const std::string& name, const torch::Tensor& t) {
  return t.dim() == 2 && name.size() > 12 && name.compare(name.size() - 12, 12, "_proj.weight") == 0;
}

TensorMap convert(const TensorMap& in, bool to_hf) {
  TensorMap out;
  for (const auto& [name, t] : in) {
    if (!to_hf && name.find("rotary_emb.inv_freq") != std::string::npos) continue;  // older checkpoints keep it
    out[rename(name, to_hf)] = transposed(name, t) ? t.t().contiguous() : t;
  }
  return out;
}

}  // namespace

std::string llama_name_to_hf(const std::string& ours) { return rename(ours, /*to_hf=*/true); }

TensorMap llama_weights_from_hf(const TensorMap& hf) { return convert(hf, /*to_hf=*/false); }
TensorMap llama_weights_to_hf(const TensorMap& ours) { return convert(ours, /*to_hf=*/true); }

}  // namespace rlhf

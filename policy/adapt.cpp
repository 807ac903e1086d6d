#include "policy/adapt.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "policy/llama.h"

namespace rlhf {

bool glob_match(const std::string& pattern, const std::string& text) {
  size_t p = 0, t = 0, star = std::string::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == text[t])) {
      ++p;
      ++t;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (star != std::string::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::vector<NamedParameter> apply_freeze(GPT& model, const FreezeConfig& config) {
  return apply_freeze(*model, model->config().n_layer, config);
}

std::vector<NamedParameter> apply_freeze(torch::nn::Module& model, int n_layer, const FreezeConfig& config) {
  std::vector<bool> pattern_used(config.patterns.size(), false);
  std::vector<NamedParameter> trainable;
  for (auto& [name, p] : named_parameters(model)) {
    bool frozen = false;
    if (config.embeddings && (name.find(".wte.") != std::string::npos || name.find(".wpe.") != std::string::npos)) {
      frozen = true;
    }
    for (int i = 0; i < config.first_layers; ++i) {
      if (name.rfind("transformer.h." + std::to_string(i) + ".", 0) == 0) frozen = true;
    }
    for (size_t i = 0; i < config.patterns.size(); ++i) {
      if (glob_match(config.patterns[i], name)) {
        frozen = true;
        pattern_used[i] = true;
      }
    }
    p.set_requires_grad(!frozen);
    if (!frozen) trainable.push_back({name, p, default_decay(name, p)});
  }
  for (size_t i = 0; i < config.patterns.size(); ++i) {
    if (!pattern_used[i]) {
      fail(ErrorKind::kConfig, "freeze.patterns: '", config.patterns[i],
           "' matches no parameter. Names look like transformer.h.0.attn.c_attn.weight.");
    }
  }
  if (config.first_layers > n_layer) {
    fail(ErrorKind::kConfig, "freeze.first_layers = ", config.first_layers, " but the model has ", n_layer,
         " layers");
  }
  return trainable;
}

LoraAdapters::LoraAdapters(GPT& model, const LoraConfig& config, uint64_t seed)
    : LoraAdapters(model.ptr(), model->config().is_llama(), config, seed) {}

LoraAdapters::LoraAdapters(std::shared_ptr<torch::nn::Module> model, bool llama, const LoraConfig& config,
                           uint64_t seed)
    : model_(std::move(model)), llama_(llama), config_(config) {
  if (config.rank < 1) fail(ErrorKind::kConfig, "lora.rank must be at least 1, not ", config.rank);
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::vector<bool> target_used(config.targets.size(), false);
  for (const auto& item : model_->named_modules("", /*include_self=*/false)) {
    auto* conv = item.value()->as<Conv1DImpl>();
    if (conv == nullptr) continue;
    const std::string& name = item.key();
    bool wanted = false;
    for (size_t i = 0; i < config.targets.size(); ++i) {
      const std::string& t = config.targets[i];
      if (name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0) {
        wanted = true;
        target_used[i] = true;
      }
    }
    if (!wanted) continue;
    const int64_t in = conv->weight.size(0), out = conv->weight.size(1);
    // Kaiming-uniform A (as PEFT), zero B: the update starts at zero.
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    torch::Tensor A = torch::empty({in, config.rank}).uniform_(-bound, bound, gen);
    torch::Tensor B = torch::zeros({config.rank, out});
    auto opts = conv->weight.options();
    LoraBranch branch{A.to(opts).set_requires_grad(true), B.to(opts).set_requires_grad(true),
                      config.alpha / config.rank};
    conv->lora = branch;
    entries_.push_back({name, Conv1D(std::static_pointer_cast<Conv1DImpl>(item.value()))});
  }
  for (size_t i = 0; i < config.targets.size(); ++i) {
    if (!target_used[i]) {
      fail(ErrorKind::kConfig, "lora.targets: no layer is named '", config.targets[i],
           llama_ ? "'; Llama-family layers are q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj and down_proj"
                                      : "'; GPT-2 layers are c_attn, c_proj and c_fc");
    }
  }
  for (auto& [name, p] : named_parameters(*model_)) p.set_requires_grad(false);
}

LoraAdapters::~LoraAdapters() {
  for (auto& e : entries_) e.layer->lora.reset();
}

std::vector<NamedParameter> LoraAdapters::parameters() const {
  std::vector<NamedParameter> out;
  for (const auto& e : entries_) {
    out.push_back({e.name + ".lora_A", e.layer->lora->A, false});
    out.push_back({e.name + ".lora_B", e.layer->lora->B, false});
  }
  return out;
}

int64_t LoraAdapters::num_parameters() const {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.tensor.numel();
  return n;
}

TensorMap LoraAdapters::merged_weights() const {
  TensorMap out = model_weights(*model_);
  torch::NoGradGuard no_grad;
  for (const auto& e : entries_) {
    const LoraBranch& l = *e.layer->lora;
    out[e.name + ".weight"] = e.layer->weight + torch::mm(l.A, l.B) * l.scale;
  }
  return out;
}

// PEFT's key for a layer: the base model's own parameter names.
std::string LoraAdapters::peft_key(const std::string& layer, const char* which) const {
  const std::string name = llama_ ? llama_name_to_hf(layer + ".") : layer + ".";
  return "base_model.model." + name + which + ".weight";
}

TensorMap LoraAdapters::peft_state() const {
  TensorMap out;
  for (const auto& e : entries_) {
    out[peft_key(e.name, "lora_A")] = e.layer->lora->A.detach().t().contiguous();
    out[peft_key(e.name, "lora_B")] = e.layer->lora->B.detach().t().contiguous();
  }
  return out;
}

Json LoraAdapters::peft_config() const {
  return Json{{"peft_type", "LORA"}, {"task_type", "CAUSAL_LM"}, {"r", config_.rank},
              {"lora_alpha", config_.alpha}, {"lora_dropout", 0.0}, {"target_modules", config_.targets},
              // GPT-2's Conv1D stores weights [in, out]; the Llama family's nn.Linear [out, in].
              {"fan_in_fan_out", !llama_}, {"bias", "none"}};
}

void LoraAdapters::load_peft_state(const TensorMap& state, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (auto& e : entries_) {
    for (const char* which : {"lora_A", "lora_B"}) {
      const std::string key = peft_key(e.name, which);
      auto it = state.find(key);
      if (it == state.end()) fail(ErrorKind::kCorrupt, source, ": adapter '", key, "' is missing");
      torch::Tensor& dst = std::string(which) == "lora_A" ? e.layer->lora->A : e.layer->lora->B;
      if (it->second.t().sizes() != dst.sizes()) {
        fail(ErrorKind::kCorrupt, source, ": adapter '", key, "' has shape ", it->second.sizes(),
             "; was lora.rank changed?");
      }
      dst.copy_(it->second.t());
    }
  }
}

std::vector<NamedParameter> trainable_parameters(torch::nn::Module& module, const LoraAdapters* lora) {
  std::vector<NamedParameter> out = lora ? lora->parameters() : std::vector<NamedParameter>{};
  for (auto& [name, p] : named_parameters(module)) {
    if (!lora || (p.requires_grad() && name.find("lora_") == std::string::npos)) out.push_back({name, p, false});
  }
  return out;
}

CheckpointWrite policy_checkpoint(GPT& model, const LoraAdapters* lora, const Tokenizer& tokenizer) {
  CheckpointWrite w;
  w.weights = lora ? lora->merged_weights() : model_weights(*model);
  w.hf_config = gpt_config_to_hf(model->config());
  w.tokenizer = &tokenizer;
  if (lora) {
    w.extra_tensors["adapter_model.safetensors"] = lora->peft_state();
    w.extra_json["adapter_config.json"] = lora->peft_config();
  }
  return w;
}

void restore_training_state(const std::string& dir, GPT& model, LoraAdapters* lora, AdamW& optimizer) {
  if (lora != nullptr) {
    lora->load_peft_state(load_safetensors(join_path(dir, "adapter_model.safetensors")).tensors, dir);
  } else {
    load_weights(*model, load_safetensors(join_path(dir, "model.safetensors")).tensors, dir);
  }
  optimizer.load_state(load_safetensors(join_path(dir, "optimizer.safetensors")).tensors, dir);
}

}  // namespace rlhf

// Choosing what fine-tuning changes: freezing parameters by name pattern or
// layer range, and LoRA adapters that can be merged back into the weights.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/checkpoint.h"
#include "policy/gpt.h"
#include "train/optim.h"
#include "train/safetensors.h"

namespace rlhf {

struct FreezeConfig {
  bool embeddings = false;        // freeze wte and wpe (and so the tied LM head)
  int first_layers = 0;           // freeze blocks h.0 .. h.(N-1), e.g. 2
  std::vector<std::string> patterns;  // globs over parameter names, e.g. "transformer.h.*.attn.*"
  template <class V> void visit(V& v) {
    v("embeddings", embeddings);
    v("first_layers", first_layers, Range::at_least(0));
    v("patterns", patterns);
  }
};

struct LoraConfig {
  bool enabled = false;           // train low-rank adapters instead of the weights
  int rank = 8;                   // r, e.g. 8
  double alpha = 16;              // scale = alpha / rank, e.g. 16
  std::vector<std::string> targets = {"c_attn", "c_proj", "c_fc"};  // Conv1D layer names to adapt
  template <class V> void visit(V& v) {
    v("enabled", enabled);
    v("rank", rank, Range::at_least(1));
    v("alpha", alpha, Range::at_least(0));
    v("targets", targets);
  }
};

// Glob match with '*' (any run of characters) and '?' (one character).
bool glob_match(const std::string& pattern, const std::string& text);

// Marks frozen parameters (requires_grad = false) and returns the trainable
// ones. A pattern that matches nothing is an error (likely a typo).
std::vector<NamedParameter> apply_freeze(GPT& model, const FreezeConfig& config);
// The same for any module with GPT-2 parameter names (e.g. a reward model).
std::vector<NamedParameter> apply_freeze(torch::nn::Module& model, int n_layer, const FreezeConfig& config);

// LoRA adapters for every Conv1D whose name ends with a target. B starts at
// zero, so attaching them leaves the model's function unchanged; the base
// weights are frozen while adapters are attached.
class LoraAdapters {
 public:
  LoraAdapters(GPT& model, const LoraConfig& config, uint64_t seed);
  // Any module with our layer names (e.g. a value model); `llama` picks
  // PEFT's names and layout for the Llama family.
  LoraAdapters(std::shared_ptr<torch::nn::Module> model, bool llama, const LoraConfig& config, uint64_t seed);
  ~LoraAdapters();
  LoraAdapters(const LoraAdapters&) = delete;
  LoraAdapters& operator=(const LoraAdapters&) = delete;

  std::vector<NamedParameter> parameters() const;  // "<layer>.lora_A" / ".lora_B"
  int64_t num_parameters() const;
  // The model's weights with every adapter folded in (W + A B scale); the
  // model itself is left as it is.
  TensorMap merged_weights() const;
  // PEFT's adapter_model.safetensors layout (lora_A [r, in], lora_B [out, r]).
  TensorMap peft_state() const;
  Json peft_config() const;
  void load_peft_state(const TensorMap& state, const std::string& source);

 private:
  struct Entry {
    std::string name;  // "transformer.h.0.attn.c_attn"
    Conv1D layer;
  };
  std::string peft_key(const std::string& layer, const char* which) const;
  std::shared_ptr<torch::nn::Module> model_;  // shared handle; reading weights needs a non-const Module
  bool llama_ = false;
  LoraConfig config_;
  std::vector<Entry> entries_;
};

// What the optimiser updates: every parameter of `module`, or with `lora`
// the adapters plus any parameter left trainable beside them (a value head).
std::vector<NamedParameter> trainable_parameters(torch::nn::Module& module, const LoraAdapters* lora);

// What a stage writes for a policy it trained: the weights (with `lora`,
// merged, and PEFT's adapter files beside them), config.json and the
// tokenizer. The caller adds its trainer state and optimiser.
CheckpointWrite policy_checkpoint(GPT& model, const LoraAdapters* lora, const Tokenizer& tokenizer);

// Restores what a run trains from its checkpoint `dir`: the adapters (with
// `lora`) or the model's weights, and the optimiser.
void restore_training_state(const std::string& dir, GPT& model, LoraAdapters* lora, AdamW& optimizer);

}  // namespace rlhf

#include "policy/checkpoint.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "common/fs.h"
#include "policy/chat.h"
#include "policy/llama.h"

namespace rlhf {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool ignorable(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias");
}

// Llama-family checkpoints are stored with Hugging Face's names and layouts.
bool hf_llama_names(const Json& hf_config) {
  return hf_config.is_object() && hf_config.contains("model_type") && hf_config["model_type"].is_string() &&
         is_llama_family(hf_config["model_type"].get<std::string>());
}

}  // namespace

TensorMap model_weights(torch::nn::Module& model) {
  TensorMap out;
  for (const auto& item : model.named_parameters(true)) out[item.key()] = item.value();
  for (const auto& item : model.named_buffers(true)) out[item.key()] = item.value();
  return out;
}

Json special_token_ids(const Tokenizer& tokenizer) {
  Json out = Json::object();
  const TokenizerConfig& tc = tokenizer.config();
  const int32_t eot = tokenizer.find_special(special::kEndOfText);
  const int32_t bos = tc.bos_token.empty() ? eot : tokenizer.token_id(tc.bos_token);
  if (bos >= 0) out["bos_token_id"] = bos;
  // A chat model stops at the end of its turn as well as at end of text.
  std::vector<int32_t> eos;
  try {
    eos = ChatTemplate(tokenizer).stop_tokens();
  } catch (const Error&) {  // a base model without chat markers or template
    for (int32_t id : {tokenizer.token_id(tc.eos_token), eot}) if (id >= 0) eos.push_back(id);
    eos.insert(eos.end(), tc.eos_token_ids.begin(), tc.eos_token_ids.end());
  }
  if (eos.empty()) return out;
  out["eos_token_id"] = eos.size() == 1 ? Json(eos[0]) : Json(eos);
  const int32_t pad = tokenizer.token_id(tc.pad_token);
  out["pad_token_id"] = pad >= 0 ? pad : eot >= 0 ? eot : eos[0];
  return out;
}

void save_checkpoint(const std::string& dir, const CheckpointWrite& c) {
  RLHF_CHECK(!c.weights.empty(), "a checkpoint needs weights");
  const std::string tmp = dir + ".partial";
  remove_all(tmp);
  make_dirs(tmp);
  save_safetensors(join_path(tmp, "model.safetensors"),
                   hf_llama_names(c.hf_config) ? llama_weights_to_hf(c.weights) : c.weights, {{"format", "pt"}});
  Json hf = c.hf_config;
  if (c.tokenizer != nullptr) {
    // Without these ids transformers falls back to GPT-2's 50256 (outside a
    // small vocabulary) and generates until max_length.
    const Json ids = special_token_ids(*c.tokenizer);
    for (auto it = ids.begin(); it != ids.end(); ++it) hf[it.key()] = it.value();
    if (!ids.empty()) write_file_atomic(join_path(tmp, "generation_config.json"), ids.dump(2));
    c.tokenizer->save(tmp);
  }
  write_file_atomic(join_path(tmp, "config.json"), hf.dump(2));
  write_file_atomic(join_path(tmp, "trainer_state.json"), c.trainer_state.dump(2));
  if (!c.optimizer_state.empty()) save_safetensors(join_path(tmp, "optimizer.safetensors"), c.optimizer_state);
  for (const auto& [name, tensors] : c.extra_tensors) save_safetensors(join_path(tmp, name), tensors);
  for (const auto& [name, value] : c.extra_json) write_file_atomic(join_path(tmp, name), value.dump(2));
  replace_path(tmp, dir);
}

void load_weights(torch::nn::Module& model, const TensorMap& tensors, const std::string& source,
                  bool allow_missing) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& item : model.named_parameters(true)) targets[item.key()] = item.value();
  for (const auto& item : model.named_buffers(true)) targets[item.key()] = item.value();
  std::set<std::string> loaded;
  torch::NoGradGuard no_grad;
  for (const auto& [raw_name, tensor] : tensors) {
    std::string name = raw_name;
    // A tied head's copy: the embedding is the head ("lm_head.weight" loads only into an untied one).
    if (ignorable(raw_name) || (raw_name == "lm_head.weight" && !targets.count(raw_name))) continue;
    if (!targets.count(name) && targets.count("transformer." + name)) name = "transformer." + name;
    auto it = targets.find(name);
    if (it == targets.end()) {
      fail(ErrorKind::kCorrupt, source, ": unexpected tensor '", raw_name,
           "'; the checkpoint does not match this model (different architecture?)");
    }
    if (it->second.sizes() != tensor.sizes()) {
      fail(ErrorKind::kCorrupt, source, ": tensor '", raw_name, "' has shape ", tensor.sizes(),
           " but the model expects ", it->second.sizes(), "; check config.json against the weights");
    }
    // A floating-point weight must come from a floating-point tensor: copy_
    // would convert stored integers into a garbage model without a word.
    if (it->second.is_floating_point() != tensor.is_floating_point()) {
      fail(ErrorKind::kCorrupt, source, ": tensor '", raw_name, "' is stored as ", tensor.scalar_type(),
           " but the model's weight is ", it->second.scalar_type(), "; the file is damaged or not a model checkpoint");
    }
    if (tensor.is_floating_point() && !torch::isfinite(tensor).all().item<bool>()) {
      fail(ErrorKind::kCorrupt, source, ": tensor '", raw_name, "' holds NaN or infinite values; the run that wrote ",
           "it diverged, or the file is damaged: load an earlier checkpoint");
    }
    it->second.copy_(tensor);
    loaded.insert(name);
  }
  if (allow_missing) return;
  for (const auto& [name, t] : targets) {
    if (!loaded.count(name)) {
      fail(ErrorKind::kCorrupt, source, ": tensor '", name, "' is missing; the file is incomplete or for another model");
    }
  }
}

namespace {

TensorMap read_model_tensors(const std::string& dir) {
  const std::string single = join_path(dir, "model.safetensors");
  if (path_exists(single)) return load_safetensors(single).tensors;
  const std::string index_path = join_path(dir, "model.safetensors.index.json");
  if (!path_exists(index_path)) {
    fail(ErrorKind::kIo, dir, ": neither model.safetensors nor model.safetensors.index.json is there");
  }
  const Json index = read_json_file(index_path);
  if (!index.contains("weight_map") || !index["weight_map"].is_object() || index["weight_map"].empty()) {
    fail(ErrorKind::kCorrupt, index_path, ": \"weight_map\" (tensor name -> shard file) is missing or empty");
  }
  std::map<std::string, std::vector<std::string>> by_shard;
  for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
    const std::string shard = it.value().is_string() ? it.value().get<std::string>() : "";
    // Shards live beside the index: a name with a path in it is refused.
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..") {
      fail(ErrorKind::kCorrupt, index_path, ": tensor '", it.key(), "' maps to ", it.value().dump(),
           ", not a shard file name in the same folder");
    }
    by_shard[shard].push_back(it.key());
  }
  TensorMap out;
  for (const auto& [shard, names] : by_shard) {
    const std::string shard_path = join_path(dir, shard);
    TensorMap tensors = load_safetensors(shard_path).tensors;
    for (const std::string& name : names) {
      auto t = tensors.find(name);
      if (t == tensors.end()) {
        fail(ErrorKind::kCorrupt, shard_path, ": the index says it holds '", name, "' but it does not");
      }
      out[name] = t->second;
    }
  }
  return out;
}

}  // namespace

TensorMap load_model_tensors(const std::string& dir) {
  TensorMap tensors = read_model_tensors(dir);
  const std::string config = join_path(dir, "config.json");
  if (path_exists(config) && hf_llama_names(read_json_file(config))) return llama_weights_from_hf(tensors);
  return tensors;
}

void share_weights(torch::nn::Module& dst, torch::nn::Module& src) {
  const TensorMap from = model_weights(src);
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : model_weights(dst)) {
    auto it = from.find(name);
    RLHF_CHECK(it != from.end() && it->second.sizes() == tensor.sizes(), "share_weights: no matching '", name, "'");
    tensor.set_data(it->second);
  }
}

LoadedPolicy load_policy(const std::string& path, torch::Device device) {
  LoadedPolicy out;
  out.dir = resolve_checkpoint(path);
  const std::string config_path = join_path(out.dir, "config.json");
  out.config = read_json_file(config_path);
  GPTConfig config = gpt_config_from_hf(out.config, config_path);
  out.tokenizer = Tokenizer::load(out.dir);
  // Every id generation should stop on, as transformers reads them.
  TokenizerConfig tc = out.tokenizer.config();
  const std::string gen_path = join_path(out.dir, "generation_config.json");
  for (const Json& source : {out.config, path_exists(gen_path) ? read_json_file(gen_path) : Json::object()}) {
    const Json eos = source.value("eos_token_id", Json());
    for (const Json& id : eos.is_array() ? eos : Json::array({eos})) {
      if (!id.is_number_integer()) continue;
      const auto v = id.get<int32_t>();
      if (v >= 0 && v < out.tokenizer.vocab_size() &&
          std::find(tc.eos_token_ids.begin(), tc.eos_token_ids.end(), v) == tc.eos_token_ids.end()) {
        tc.eos_token_ids.push_back(v);
      }
    }
  }
  out.tokenizer.set_config(std::move(tc));
  out.model = GPT(config);
  load_weights(*out.model, load_model_tensors(out.dir), out.dir);
  out.model->to(device);
  out.model->eval();
  const std::string state_path = join_path(out.dir, "trainer_state.json");
  out.trainer_state = path_exists(state_path) ? read_json_file(state_path) : Json::object();
  return out;
}

}  // namespace rlhf

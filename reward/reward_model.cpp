#include "reward/reward_model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <map>

#include "common/error.h"
#include "common/fs.h"

namespace rlhf {

ScalarHeadModelImpl::ScalarHeadModelImpl(const GPTConfig& config) {
  transformer = register_module("transformer", Transformer(config));
  score = register_module("score", torch::nn::Linear(torch::nn::LinearOptions(config.n_embd, 1).bias(false)));
}

torch::Tensor ScalarHeadModelImpl::forward_tokens(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  return score(transformer(input_ids, attention_mask)).squeeze(-1);
}

torch::Tensor last_token_index(const torch::Tensor& attention_mask) {
  const int64_t T = attention_mask.size(1);
  torch::Tensor positions = torch::arange(T, attention_mask.options().dtype(torch::kLong)).unsqueeze(0);
  return (positions * attention_mask.to(torch::kLong)).argmax(1);
}

namespace {
// hidden [B, T, C] at each row's last real token -> [B, C].
torch::Tensor at_last_token(const torch::Tensor& hidden, const torch::Tensor& attention_mask) {
  torch::Tensor idx = last_token_index(attention_mask);
  return hidden.gather(1, idx.view({-1, 1, 1}).expand({-1, 1, hidden.size(2)})).squeeze(1);
}
}  // namespace

torch::Tensor ScalarHeadModelImpl::features(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                            bool right_padded) {
  return at_last_token(transformer(input_ids, right_padded ? torch::Tensor() : attention_mask), attention_mask);
}

torch::Tensor ScalarHeadModelImpl::forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
                                           bool right_padded) {
  return score(features(input_ids, attention_mask, right_padded)).squeeze(-1);
}

torch::Tensor ScalarHeadModelImpl::features_shared(const SharedPromptBatch& b) {
  const int64_t Tp = b.prompt_ids.size(1), Ts = b.reply_ids.size(1);
  KVCache cache = transformer->make_cache(b.prompt_ids.size(0), Tp + Ts);
  transformer(b.prompt_ids, b.prompt_mask, &cache);  // only the keys and values are needed
  cache.select_rows(b.prompt_of);
  return at_last_token(transformer(b.reply_ids, b.reply_mask, &cache), b.reply_mask);  // [R, C]
}

torch::Tensor ScalarHeadModelImpl::forward_shared(const SharedPromptBatch& b) {
  return score(features_shared(b)).squeeze(-1);
}

torch::Tensor bradley_terry_per_pair(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                                     const torch::Tensor& margin, const torch::Tensor& tie, double label_noise) {
  torch::Tensor d = r_chosen - r_rejected;
  torch::Tensor strict = -torch::log_sigmoid(d - margin);
  if (label_noise > 0) {
    // P(label) = (1 - e) sigmoid(d - m) + e sigmoid(m - d), in log space.
    strict = -torch::logaddexp(std::log1p(-label_noise) + torch::log_sigmoid(d - margin),
                               std::log(label_noise) + torch::log_sigmoid(margin - d));
  }
  torch::Tensor tied = -0.5 * (torch::log_sigmoid(d) + torch::log_sigmoid(-d));
  return torch::where(tie.to(torch::kBool), tied, strict);
}

torch::Tensor bradley_terry_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                                 const torch::Tensor& margin, const torch::Tensor& tie, const torch::Tensor& weight) {
  return (bradley_terry_per_pair(r_chosen, r_rejected, margin, tie) * weight).sum() / weight.sum();
}

ScalarHeadModel reward_model_from_policy(const LoadedPolicy& policy, uint64_t seed) {
  ScalarHeadModel rm(policy.model->config());
  torch::NoGradGuard no_grad;
  TensorMap backbone;
  for (const auto& item : policy.model->transformer->named_parameters(true)) {
    backbone["transformer." + item.key()] = item.value();
  }
  for (auto& item : rm->named_parameters(true)) {
    if (item.key() == "score.weight") continue;
    item.value().copy_(backbone.at(item.key()));
  }
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const double std = 1.0 / std::sqrt(static_cast<double>(policy.model->config().n_embd) + 1.0);
  torch::Tensor w = torch::empty(rm->score->weight.sizes()).normal_(0.0, std, gen);
  rm->score->weight.copy_(w);
  return rm;
}

Json reward_config_to_hf(const ScalarHeadModelImpl& model, int32_t pad_token_id) {
  Json c = gpt_config_to_hf(model.config());
  // transformers' sequence-classification class of the same family.
  std::string arch = c["architectures"][0].get<std::string>();
  for (const char* suffix : {"LMHeadModel", "ForCausalLM"}) {
    const size_t at = arch.find(suffix);
    if (at != std::string::npos) arch = arch.substr(0, at) + "ForSequenceClassification";
  }
  c["architectures"] = {arch};
  c["num_labels"] = 1;
  c["id2label"] = {{"0", "LABEL_0"}};
  c["label2id"] = {{"LABEL_0", 0}};
  c["pad_token_id"] = pad_token_id;
  c["rlhf_reward_normalization"] = {{"gain", model.gain}, {"bias", model.bias}};
  return c;
}

LoadedRewardModel load_reward_model(const std::string& path, torch::Device device) {
  LoadedRewardModel out;
  out.dir = resolve_checkpoint(path, /*prefer_best=*/true);
  const std::string config_path = join_path(out.dir, "config.json");
  const Json config = read_json_file(config_path);
  if (!config.contains("num_labels")) {
    fail(ErrorKind::kData, out.dir, " is not a reward model (config.json has no num_labels); train one with `rlhf rm train`");
  }
  out.model = ScalarHeadModel(gpt_config_from_hf(config, config_path));
  load_weights(*out.model, load_model_tensors(out.dir), out.dir);
  if (config.contains("rlhf_reward_normalization")) {
    out.model->gain = config["rlhf_reward_normalization"].value("gain", 1.0);
    out.model->bias = config["rlhf_reward_normalization"].value("bias", 0.0);
  }
  out.tokenizer = Tokenizer::load(out.dir);
  const std::string state = join_path(out.dir, "trainer_state.json");
  out.trainer_state = path_exists(state) ? read_json_file(state) : Json::object();
  out.model->to(device);
  out.model->eval();
  return out;
}

ScoringBatch reward_batch(const ChatTemplate& chat, const std::vector<const Conversation*>& prompts,
                          const std::vector<const std::string*>& replies, int64_t max_tokens,
                          const std::vector<bool>& finished) {
  RLHF_CHECK(prompts.size() == replies.size());
  std::vector<std::vector<int32_t>> rows;
  int64_t T = 1;
  for (size_t i = 0; i < prompts.size(); ++i) {
    std::vector<int32_t> ids = chat.render_prompt(*prompts[i]);
    for (int32_t id : chat.tokenizer().encode(*replies[i])) ids.push_back(id);
    if (finished.empty() || finished[i]) ids.push_back(chat.end_of_turn());
    // Keep the end: the score is read at the last token.
    if (static_cast<int64_t>(ids.size()) > max_tokens) ids.erase(ids.begin(), ids.end() - max_tokens);
    T = std::max<int64_t>(T, static_cast<int64_t>(ids.size()));
    rows.push_back(std::move(ids));
  }
  ScoringBatch b;
  const auto B = static_cast<int64_t>(rows.size());
  b.input_ids = torch::full({B, T}, chat.pad_id(), torch::kLong);
  b.attention_mask = torch::zeros({B, T}, torch::kLong);
  auto ids = b.input_ids.accessor<int64_t, 2>();
  auto m = b.attention_mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < B; ++r) {
    for (size_t t = 0; t < rows[r].size(); ++t) {
      ids[r][t] = rows[r][t];
      m[r][t] = 1;
    }
  }
  return b;
}

SharedPromptBatch SharedPromptBatch::to(torch::Device device) const {
  return SharedPromptBatch{prompt_ids.to(device), prompt_mask.to(device), reply_ids.to(device), reply_mask.to(device),
                           prompt_of.to(device)};
}

std::optional<SharedPromptBatch> shared_prompt_batch(const ChatTemplate& chat,
                                                     const std::vector<const Conversation*>& prompts,
                                                     const std::vector<const std::string*>& replies,
                                                     int64_t max_tokens, const std::vector<bool>& finished) {
  RLHF_CHECK(prompts.size() == replies.size());
  std::map<std::vector<int32_t>, int64_t> index;  // rendered prompt -> its row
  std::vector<const std::vector<int32_t>*> prompt_rows;
  std::vector<std::vector<int32_t>> reply_rows;
  std::vector<int64_t> prompt_of;
  const Conversation* last_prompt = nullptr;
  int64_t last_row = -1;
  for (size_t i = 0; i < prompts.size(); ++i) {
    if (prompts[i] != last_prompt) {  // consecutive replies usually share the object
      auto [it, added] = index.emplace(chat.render_prompt(*prompts[i]), static_cast<int64_t>(prompt_rows.size()));
      if (added) prompt_rows.push_back(&it->first);
      last_prompt = prompts[i];
      last_row = it->second;
    }
    std::vector<int32_t> ids = chat.tokenizer().encode(*replies[i]);
    if (finished.empty() || finished[i]) ids.push_back(chat.end_of_turn());
    const auto n = static_cast<int64_t>(prompt_rows[last_row]->size() + ids.size());
    if (ids.empty() || n > max_tokens) return std::nullopt;
    reply_rows.push_back(std::move(ids));
    prompt_of.push_back(last_row);
  }
  int64_t Tp = 1, Ts = 1;
  for (const auto* p : prompt_rows) Tp = std::max<int64_t>(Tp, static_cast<int64_t>(p->size()));
  for (const auto& r : reply_rows) Ts = std::max<int64_t>(Ts, static_cast<int64_t>(r.size()));
  SharedPromptBatch b;
  const auto P = static_cast<int64_t>(prompt_rows.size()), R = static_cast<int64_t>(reply_rows.size());
  b.prompt_ids = torch::full({P, Tp}, chat.pad_id(), torch::kLong);
  b.prompt_mask = torch::zeros({P, Tp}, torch::kLong);
  auto pi = b.prompt_ids.accessor<int64_t, 2>();
  auto pm = b.prompt_mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < P; ++r) {
    const std::vector<int32_t>& ids = *prompt_rows[r];
    const int64_t start = Tp - static_cast<int64_t>(ids.size());
    for (size_t t = 0; t < ids.size(); ++t) {
      pi[r][start + static_cast<int64_t>(t)] = ids[t];
      pm[r][start + static_cast<int64_t>(t)] = 1;
    }
  }
  b.reply_ids = torch::full({R, Ts}, chat.pad_id(), torch::kLong);
  b.reply_mask = torch::zeros({R, Ts}, torch::kLong);
  auto ri = b.reply_ids.accessor<int64_t, 2>();
  auto rm = b.reply_mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < R; ++r) {
    for (size_t t = 0; t < reply_rows[r].size(); ++t) {
      ri[r][static_cast<int64_t>(t)] = reply_rows[r][t];
      rm[r][static_cast<int64_t>(t)] = 1;
    }
  }
  b.prompt_of = torch::tensor(prompt_of, torch::kLong);
  return b;
}

}  // namespace rlhf

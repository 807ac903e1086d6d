#include "rollout/validation.h"

#include <cmath>
#include <sstream>

#include "common/error.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "support/rubric.h"

namespace rlhf {

Json ValidationResult::to_json() const {
  Json j = {{"iteration", iteration}, {"reward", reward}, {"kl", kl}, {"length", length}, {"finished", finished}};
  if (has_gold) j["gold"] = gold;
  return j;
}

ValidationResult ValidationResult::from_json(const Json& j) {
  ValidationResult r;
  r.iteration = j.at("iteration");
  r.reward = j.at("reward");
  r.kl = j.at("kl");
  r.length = j.at("length");
  r.finished = j.at("finished");
  r.has_gold = j.contains("gold");
  if (r.has_gold) r.gold = j["gold"];
  return r;
}

std::vector<ValidationPrompt> load_validation_prompts(const ValidationConfig& config, const ChatTemplate& chat,
                                                      const std::string& default_system) {
  std::vector<ValidationPrompt> out;
  read_jsonl(config.prompts, [&](const Json& obj, size_t line) {
    if (config.max_prompts > 0 && static_cast<int>(out.size()) >= config.max_prompts) return;
    ValidationPrompt p;
    p.conversation = prompt_from_json(obj, config.prompts, line, default_system);
    p.metadata = obj.value("metadata", Json());
    p.ids = chat.render_prompt(p.conversation);
    out.push_back(std::move(p));
  });
  if (out.empty()) fail(ErrorKind::kData, config.prompts, ": no validation prompts");
  return out;
}

double gold_of(const Json& metadata, const Conversation& prompt, const std::string& reply, bool finished) {
  support::CaseFacts facts = support::facts_from_metadata(metadata);
  if (facts.intent.empty()) return std::nan("");
  (void)prompt;
  return support::gold_score(facts, reply, finished).total;
}

torch::Tensor generation_kl(GPT& policy, GPT& reference, const std::vector<std::vector<int32_t>>& prompts,
                            const Generation& g, int64_t max_new_tokens, int32_t pad, double temperature,
                            torch::Tensor* full_ids, torch::Tensor* full_mask) {
  torch::NoGradGuard no_grad;
  const torch::Device device = policy->transformer->wte->weight.device();
  PromptBatch q = left_pad_prompts(prompts, prompt_budget(policy->config(), max_new_tokens), pad, device);
  // Valid reply tokens: up to and including the stop token.
  const torch::Tensor positions = torch::arange(g.tokens.size(1), g.tokens.options()).unsqueeze(0);
  const torch::Tensor mask = (positions < g.lengths.unsqueeze(1)).to(torch::kLong);
  const torch::Tensor full = torch::cat({q.ids, g.tokens}, 1), fmask = torch::cat({q.mask, mask}, 1);
  const int64_t tq = q.ids.size(1), n = g.tokens.size(1);
  auto lp = [&](GPT& m) {
    torch::Tensor logits = m->forward(full, fmask).narrow(1, tq - 1, n);
    return logprobs_from_logits(logits, g.tokens, temperature > 0 ? temperature : 1.0);
  };
  if (full_ids != nullptr) *full_ids = full;
  if (full_mask != nullptr) *full_mask = fmask;
  return ((lp(policy) - lp(reference)) * mask.to(torch::kFloat)).sum(1);
}

PolicyReplies validation_replies(GPT& policy, GPT& reference, ScalarHeadModel& reward_model, const ChatTemplate& chat,
                                 const std::vector<ValidationPrompt>& prompts, const ValidationConfig& config) {
  torch::NoGradGuard no_grad;
  PolicyReplies out;
  SamplingConfig sc;
  sc.temperature = config.temperature;
  sc.max_new_tokens = config.max_new_tokens;
  sc.weights = config.weights;
  const bool policy_training = policy->is_training(), rm_training = reward_model->is_training();
  policy->eval();
  reward_model->eval();
  constexpr size_t kBatch = 64;
  for (size_t i = 0; i < prompts.size(); i += kBatch) {
    const size_t end = std::min(prompts.size(), i + kBatch);
    std::vector<std::vector<int32_t>> ids;
    std::vector<uint64_t> seeds;
    for (size_t k = i; k < end; ++k) {
      ids.push_back(prompts[k].ids);
      seeds.push_back(mix_seed({static_cast<uint64_t>(config.seed), k}));
    }
    Generation g = generate(policy, ids, sc, chat.stop_tokens(), chat.pad_id(), seeds);
    torch::Tensor full, full_mask;
    const torch::Tensor kl = generation_kl(policy, reference, ids, g, config.max_new_tokens, chat.pad_id(),
                                           config.temperature, &full, &full_mask);
    const torch::Tensor reward = reward_model->normalized(reward_model->forward(full, full_mask));
    const std::vector<ChatReply> replies = decode_replies(chat, g.tokens, g.lengths, g.finished);
    for (size_t k = i; k < end; ++k) {
      const int64_t r = static_cast<int64_t>(k - i);
      out.text.push_back(replies[static_cast<size_t>(r)].text);
      out.finished.push_back(replies[static_cast<size_t>(r)].finished);
      out.tokens.push_back(replies[static_cast<size_t>(r)].tokens);
      out.kl.push_back(kl[r].item<double>());
      out.reward.push_back(reward[r].item<double>());
      out.gold.push_back(gold_of(prompts[k].metadata, prompts[k].conversation, out.text.back(), out.finished.back()));
    }
  }
  policy->train(policy_training);
  reward_model->train(rm_training);
  return out;
}

ValidationResult summarise(const PolicyReplies& r, int64_t iteration) {
  ValidationResult v;
  v.iteration = iteration;
  const double n = static_cast<double>(r.text.size());
  size_t gold_n = 0;
  for (size_t i = 0; i < r.text.size(); ++i) {
    v.reward += r.reward[i] / n;
    v.kl += r.kl[i] / n;
    v.length += static_cast<double>(r.tokens[i]) / n;
    v.finished += (r.finished[i] ? 1.0 : 0.0) / n;
    if (!std::isnan(r.gold[i])) {
      v.gold += r.gold[i];
      ++gold_n;
    }
  }
  v.has_gold = gold_n > 0;
  if (gold_n > 0) v.gold /= static_cast<double>(gold_n);
  return v;
}

namespace {
std::string one_line(std::string s) {
  for (char& c : s) {
    if (c == '\n' || c == '|') c = ' ';
  }
  return s;
}
std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}
}  // namespace

std::string validation_report(const std::vector<ValidationResult>& history, const std::vector<ValidationPrompt>& prompts,
                              const PolicyReplies& reference, const PolicyReplies& policy, int samples) {
  std::ostringstream md;
  md << "# PPO validation\n\n"
     << "Held-out prompts, fixed sampling settings. `reward` is the reward model's normalised score (the proxy PPO "
        "optimises), `gold` the simulated rater's rubric (never a training signal), `KL` the summed log-ratio to the "
        "SFT reference over each reply. If reward keeps rising while gold falls, the policy is exploiting the reward "
        "model (Gao et al. 2022).\n\n"
     << "| iteration | KL | reward (RM) | gold | length | finished |\n|---:|---:|---:|---:|---:|---:|\n";
  for (const auto& v : history) {
    md << "| " << v.iteration << " | " << fmt(v.kl) << " | " << fmt(v.reward) << " | "
       << (v.has_gold ? fmt(v.gold) : std::string("-")) << " | " << fmt(v.length) << " | " << fmt(v.finished) << " |\n";
  }
  md << "\n## Replies side by side (latest validation)\n\n";
  for (int i = 0; i < samples && i < static_cast<int>(prompts.size()); ++i) {
    md << "**Customer:** " << one_line(prompts[i].conversation.back().content) << "\n\n"
       << "- SFT (reward " << fmt(reference.reward[i]) << ", gold "
       << (std::isnan(reference.gold[i]) ? "-" : fmt(reference.gold[i])) << "): " << one_line(reference.text[i]) << "\n"
       << "- PPO (reward " << fmt(policy.reward[i]) << ", gold " << (std::isnan(policy.gold[i]) ? "-" : fmt(policy.gold[i]))
       << "): " << one_line(policy.text[i]) << "\n\n";
  }
  return md.str();
}

}  // namespace rlhf

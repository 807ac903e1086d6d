// Validation of a policy on held-out prompts with fixed sampling settings:
// reward-model score, gold score (when prompts carry the facts), KL to the
// reference and reply length, plus a few replies side by side with the
// reference (SFT) policy's. Reports make reward over-optimisation visible:
// gold against RM score as KL grows.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "policy/chat.h"
#include "policy/generate.h"
#include "policy/gpt.h"
#include "reward/reward_model.h"

namespace rlhf {

struct ValidationConfig {
  std::string prompts = "data/support/heldout_prompts.jsonl";  // held-out prompts (with metadata for gold)
  int interval = 10;        // iterations between validations (and always at the end)
  int max_prompts = 0;      // 0 = all
  double temperature = 0.7; // fixed settings so validations compare
  int max_new_tokens = 80;
  int64_t seed = 99;
  int samples = 4;          // replies written side by side with the reference's
  std::string weights = "fp32";  // sampling precision, "fp32" or "bf16" (KL and reward stay fp32)
  template <class V> void visit(V& v) {
    v("prompts", prompts);
    v("interval", interval, Range::at_least(0));
    v("max_prompts", max_prompts, Range::at_least(0));
    v("temperature", temperature, Range::at_least(0));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    v("seed", seed);
    v("samples", samples, Range::at_least(1));
    v("weights", weights);
  }
};

struct ValidationPrompt {
  Conversation conversation;
  Json metadata;
  std::vector<int32_t> ids;  // rendered with the chat template
};

struct PolicyReplies {
  std::vector<std::string> text;
  std::vector<bool> finished;
  std::vector<int64_t> tokens;
  std::vector<double> kl;        // sum over reply tokens of log pi - log pi_ref
  std::vector<double> reward;    // normalised reward-model score
  std::vector<double> gold;      // NaN when the prompt has no facts
};

struct ValidationResult {
  int64_t iteration = 0;
  double reward = 0, gold = 0, kl = 0, length = 0, finished = 0;
  bool has_gold = false;
  double objective(double kl_coef) const { return reward - kl_coef * kl; }
  Json to_json() const;
  static ValidationResult from_json(const Json& j);
};

std::vector<ValidationPrompt> load_validation_prompts(const ValidationConfig& config, const ChatTemplate& chat,
                                                      const std::string& default_system);

// Generates with `policy` and measures every reply.
// KL from the reference of generated replies [B]: the sum over each reply's
// tokens (through its stop token) of log p - log p_ref of the sampled token,
// at `temperature` (the k1 estimate). The prompts are left-padded as
// generate() pads them; the full sequences and masks are handed back on request.
torch::Tensor generation_kl(GPT& policy, GPT& reference, const std::vector<std::vector<int32_t>>& prompts,
                            const Generation& g, int64_t max_new_tokens, int32_t pad, double temperature,
                            torch::Tensor* full_ids = nullptr, torch::Tensor* full_mask = nullptr);

PolicyReplies validation_replies(GPT& policy, GPT& reference, ScalarHeadModel& reward_model, const ChatTemplate& chat,
                                 const std::vector<ValidationPrompt>& prompts, const ValidationConfig& config);

ValidationResult summarise(const PolicyReplies& replies, int64_t iteration);

// Gold score of a reply by the simulated rater's rubric; NaN without facts.
double gold_of(const Json& metadata, const Conversation& prompt, const std::string& reply, bool finished);

// Markdown: a table of validations (KL, reward, gold) and replies side by side.
std::string validation_report(const std::vector<ValidationResult>& history, const std::vector<ValidationPrompt>& prompts,
                              const PolicyReplies& reference, const PolicyReplies& policy, int samples);

}  // namespace rlhf

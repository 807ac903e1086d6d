#include "rollout/live_feedback.h"

#include <memory>

#include "common/log.h"
#include "labels/store.h"

namespace rlhf {

FreshPairsFn label_store_sink(const OnlineFeedbackConfig& config, const std::string& policy, double temperature,
                              const std::string& stage) {
  if (config.db.empty() || config.every <= 0) return nullptr;
  auto store = std::make_shared<labels::LabelStore>(config.db);
  const int required = config.required_raters;
  return [store, policy, temperature, required, stage](const std::vector<FreshPair>& pairs) {
    size_t queued = 0;
    for (const FreshPair& p : pairs) {
      const std::string name = policy + "@iter" + std::to_string(p.iteration);
      const Json sampling = {{"temperature", temperature}, {"source", stage}};
      const int64_t prompt = store->add_prompt(p.conversation, p.metadata);
      const int64_t a = store->add_candidate(prompt, p.reply_a, p.finished_a, name, sampling);
      const int64_t b = store->add_candidate(prompt, p.reply_b, p.finished_b, name, sampling);
      if (a != b && store->add_comparison(prompt, {a, b}, required)) ++queued;
    }
    log_info(stage, ": queued ", queued, " fresh comparisons for rating in ", store->path());
  };
}

}  // namespace rlhf

// The live link from a running PPO session to the people rating: fresh reply
// pairs become comparisons in the label store (which `rlhf serve-labels` may
// be serving at the same time; SQLite WAL makes that safe).
#pragma once

#include "rollout/ppo.h"

namespace rlhf {

// A sink for run_ppo's `feedback` argument; nullptr when feedback.db is unset.
// Each pair becomes a prompt, two candidates (policy "<policy>@iter<N>") and
// one queued comparison.
FreshPairsFn label_store_sink(const OnlineFeedbackConfig& config, const std::string& policy, double temperature,
                              const std::string& stage = "ppo");

}  // namespace rlhf

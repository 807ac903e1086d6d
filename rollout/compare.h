// Comparing policies on held-out prompts (`rlhf compare A B [more...]`):
// every policy answers every prompt with the same sampling settings and
// seeds; each pair of policies is judged per prompt by the reward model and,
// where the prompts carry the facts, by the gold rater. Win rates count ties
// as half, with bootstrap 95% intervals over prompts; with more than two
// policies, a Bradley-Terry leaderboard (and its Elo scale). Writes
// compare.json (machine-readable), compare.md (for people) and replies.jsonl.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "common/stats.h"
#include "policy/generate.h"

namespace rlhf {

struct CompareConfig {
  std::vector<std::string> policies;  // checkpoints or run folders (their best checkpoint)
  std::vector<std::string> names;     // display names (default: the folder names)
  std::string prompts = "data/support/heldout_prompts.jsonl";
  int max_prompts = 0;                // 0 = all
  std::string reward_model;           // judge by this reward model ("" = none)
  std::string reference;              // report each policy's KL from this one, e.g. the SFT policy ("" = none)
  bool gold = true;                   // judge by the simulated rater where prompts have facts
  SamplingConfig sampling = [] {
    SamplingConfig s;
    s.temperature = 0.7;
    s.max_new_tokens = 80;
    s.seed = 2024;
    return s;
  }();
  int samples = 1;                    // replies per prompt and policy
  int bootstrap = 2000;               // resamples for the intervals
  std::string out = "runs/compare";   // output folder
  int threads = 0;
  template <class V> void visit(V& v) {
    v("policies", policies);
    v("names", names);
    v("prompts", prompts);
    v("max_prompts", max_prompts, Range::at_least(0));
    v("reward_model", reward_model);
    v("reference", reference);
    v("gold", gold);
    v.section("sampling", sampling);
    v("samples", samples, Range::at_least(1));
    v("bootstrap", bootstrap, Range::at_least(0));
    v("out", out);
    v("threads", threads, Range::at_least(0));
  }
};


// Bradley-Terry strengths by the MM algorithm (Hunter 2004) from
// wins[i][j] = times i beat j (ties count half to each). Normalised to a
// geometric mean of 1. Elo = 400 log10(strength) + 1000.
std::vector<double> bradley_terry(const std::vector<std::vector<double>>& wins, int iterations = 1000);
double elo_of(double strength);

struct PairwiseResult {
  std::string a, b, judge;  // judge: "reward_model" or "gold"
  WinRate a_wins;
};

struct CompareReport {
  std::vector<std::string> names;
  std::vector<PairwiseResult> pairs;
  std::vector<double> mean_reward, mean_gold, mean_length;  // per policy (NaN if unavailable)
  std::vector<double> mean_kl;        // per policy: KL from the reference per reply, nats (NaN without one)
  std::vector<double> end_of_turn;    // per policy: share of replies that ended with the end-of-turn token
  std::vector<double> bt_gold, bt_reward;                   // leaderboard strengths (empty for 2 policies)
  Json to_json() const;
  std::string to_markdown() const;
};

CompareReport run_compare(const CompareConfig& config);

}  // namespace rlhf

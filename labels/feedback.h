// Filling the label store: sampling candidate replies from policies and
// queueing comparisons for rating (`rlhf candidates`), and labelling them
// with the simulated rater (`rlhf label --simulated`).
#pragma once

#include <string>
#include <vector>

#include "common/config.h"
#include "labels/store.h"
#include "policy/generate.h"
#include "reward/preference.h"
#include "reward/simulated_rater.h"

namespace rlhf::labels {

struct CandidatesConfig {
  std::string db = "runs/labels.sqlite";                    // the label store
  std::string prompts = "data/support/rl_prompts.jsonl";    // {"prompt": ..., "metadata": ...}
  std::vector<std::string> policies = {"runs/sft"};         // checkpoints to sample from
  std::vector<double> temperatures = {1.0};                 // one or more sampling temperatures
  int k = 4;                        // replies per prompt, spread over policies x temperatures
  int max_prompts = 0;              // 0 = all
  std::string pairs = "adjacent";   // "adjacent" (K-1 pairs), "all" (C(K,2) pairs) or "ranking" (one K-way task)
  int required_raters = 1;          // raters each comparison needs
  int max_new_tokens = 96;
  int batch_size = 32;              // replies per generation batch, in whole prompts (a prompt's K samples share one prompt pass)
  int64_t seed = 11;
  int threads = 0;
  std::string weights = "fp32";     // sampling precision, "fp32" or "bf16" (faster on AVX512-BF16 CPUs and GPUs)
  template <class V> void visit(V& v) {
    v("db", db);
    v("prompts", prompts);
    v("policies", policies);
    v("temperatures", temperatures, Range::at_least(0));
    v("k", k, Range::at_least(2));
    v("max_prompts", max_prompts, Range::at_least(0));
    v("pairs", pairs);
    v("required_raters", required_raters, Range::at_least(1));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    v("batch_size", batch_size, Range::at_least(1));
    v("seed", seed);
    v("threads", threads, Range::at_least(0));
    v("weights", weights);
  }
};

struct CandidatesResult {
  size_t prompts = 0, candidates = 0, comparisons = 0;
  Json times;  // seconds by phase: {"time/load_s", "time/generation_s", "time/store_s", "time/iteration_s"}
};
CandidatesResult queue_candidates(const CandidatesConfig& config);

struct SimulatedLabelResult {
  size_t labelled = 0;
};
// Labels every comparison `rater_name` has not labelled yet (up to `limit`,
// in serving order), from the gold rubric with noise. The rater is created
// (kind "simulated") if needed.
SimulatedLabelResult label_simulated(LabelStore& store, const std::string& rater_name,
                                     const SimulatedRaterConfig& config, size_t limit = SIZE_MAX);
// The simulated rater's id, created if needed.
int64_t simulated_rater_id(LabelStore& store, const std::string& rater_name);
// Labels one comparison as the simulated rater; returns the label id. The
// same rater config judges the same comparison the same way every time.
int64_t label_simulated(LabelStore& store, int64_t rater_id, const Comparison& c, const SimulatedRaterConfig& config);

// Gold-rubric scores of a comparison's candidates (measurement only).
std::vector<double> gold_scores(LabelStore& store, const Comparison& c);
// Marks up to `count` pair comparisons whose gold scores differ by at least
// `min_gap` as gold items (known answers the label service mixes in to
// measure raters). Returns how many were marked.
size_t mark_gold_items(LabelStore& store, size_t count, double min_gap);

// Preference pairs from the store (labels with id > since_label_id), and the
// largest label id read.
std::vector<PreferencePair> store_preferences(LabelStore& store, int64_t since_label_id, int64_t* last_label_id);

}  // namespace rlhf::labels

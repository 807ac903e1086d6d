// The simulated rater: a rater like any other in the label store, whose
// judgements come from the gold rubric (support/rubric.h) plus configured
// noise, so the pipeline runs unattended and its results can be measured.
//
// With probability `flip` the judgement is reversed and with probability
// `tie` it is "tie" whatever the rubric says. Two independent simulated
// raters then agree on a pair with distinct gold scores with probability
// (1 - flip - tie)^2 + flip^2 + tie^2: 0.7350 at the defaults, close to the
// ~73% inter-rater agreement InstructGPT reports for people.
#pragma once

#include <cstdint>
#include <vector>

#include "common/config.h"

namespace rlhf {

struct SimulatedRaterConfig {
  double flip = 0.10;  // probability of preferring the worse reply, e.g. 0.10
  double tie = 0.05;   // probability of answering "tie", e.g. 0.05
  int64_t seed = 1;    // two raters with different seeds disagree like two people
  template <class V> void visit(V& v) {
    v("flip", flip, Range::between(0, 0.5));
    v("tie", tie, Range::between(0, 1));
    v("seed", seed);
  }
};

enum class Judgement { kFirst, kSecond, kTie };

// Deterministic for (config.seed, item): the same rater judges the same item
// the same way every time.
Judgement simulated_judgement(double gold_first, double gold_second, const SimulatedRaterConfig& config,
                              uint64_t item);
// Ranks (1 = best, equal gold -> equal rank) with the same noise: each
// adjacent pair is swapped with probability `flip`.
std::vector<int> simulated_ranking(const std::vector<double>& gold, const SimulatedRaterConfig& config, uint64_t item);

// Agreement of two independent raters with this config on pairs whose gold
// scores differ.
double expected_self_agreement(const SimulatedRaterConfig& config);

}  // namespace rlhf

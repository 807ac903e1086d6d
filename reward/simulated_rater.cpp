#include "reward/simulated_rater.h"

#include <algorithm>
#include <numeric>

#include "common/error.h"
#include "common/hash.h"

namespace rlhf {

Judgement simulated_judgement(double gold_first, double gold_second, const SimulatedRaterConfig& c, uint64_t item) {
  if (c.flip < 0 || c.tie < 0 || c.flip + c.tie > 1) {
    fail(ErrorKind::kConfig, "simulated rater: flip (", c.flip, ") and tie (", c.tie,
         ") must be probabilities that sum to at most 1");
  }
  SplitMix rng(mix_seed({static_cast<uint64_t>(c.seed), item, 0x7a7eu}));
  const double u = rng.uniform();
  if (u < c.tie) return Judgement::kTie;
  if (gold_first == gold_second) {
    // No true preference: an honest rater says tie; a "flipped" one picks a side.
    if (u < c.tie + c.flip) return rng.uniform() < 0.5 ? Judgement::kFirst : Judgement::kSecond;
    return Judgement::kTie;
  }
  const bool first_better = gold_first > gold_second;
  const bool flipped = u < c.tie + c.flip;
  return (first_better != flipped) ? Judgement::kFirst : Judgement::kSecond;
}

std::vector<int> simulated_ranking(const std::vector<double>& gold, const SimulatedRaterConfig& c, uint64_t item) {
  std::vector<size_t> order(gold.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return gold[a] > gold[b]; });
  SplitMix rng(mix_seed({static_cast<uint64_t>(c.seed), item, 0x4a4bu}));
  for (size_t i = 0; i + 1 < order.size(); ++i) {
    if (rng.uniform() < c.flip) std::swap(order[i], order[i + 1]);
  }
  std::vector<int> ranks(gold.size());
  int rank = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    if (i == 0 || gold[order[i]] != gold[order[i - 1]]) rank = static_cast<int>(i) + 1;
    ranks[order[i]] = rank;
  }
  return ranks;
}

double expected_self_agreement(const SimulatedRaterConfig& c) {
  const double honest = 1.0 - c.flip - c.tie;
  return honest * honest + c.flip * c.flip + c.tie * c.tie;
}

}  // namespace rlhf

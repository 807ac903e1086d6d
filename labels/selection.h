// Active selection: which open comparisons people should label first.
// A strategy turns what the reward model(s) say about a comparison into a
// score (higher = ask sooner); `order_for_labelling` sorts by it and keeps a
// floor of uniformly random picks so the label distribution stays honest
// (a reward model trained only on its own hard cases learns a skewed
// picture). The strategy and score behind each pick are recorded with the
// label it gets (LabelStore::set_selection).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace rlhf::labels {

enum class SelectionStrategy {
  kRandom,        // uniformly at random (the baseline)
  kUncertainty,   // the reward model's Bradley-Terry probability nearest 0.5
  kDisagreement,  // reward models of an ensemble disagree most on the probability
  kDiversity,     // the replies come from different policies or temperatures
  kGradient,      // expected gradient length: uncertain, and the replies look different to the model
  kBadge,         // a batch of gradient embeddings spread by k-means++ (BADGE): informative and unlike each other
};
const char* selection_strategy_name(SelectionStrategy s);
// Fails (kConfig, naming `field`) on an unknown name and lists the known ones.
SelectionStrategy parse_selection_strategy(const std::string& name, const std::string& field);

// What is known about one open comparison.
struct ComparisonSignals {
  // Per ensemble member: r(a) - r(b) for a pair; for a K-way ranking the
  // smallest gap between two of its replies (its hardest pair).
  std::vector<double> margins;
  // Per ensemble member, for the same pair as `margins`: the distance
  // |h(a) - h(b)| between the replies' inputs to the reward model's score
  // head (its last hidden state at the last token). Gradient needs it.
  std::vector<double> feature_distances;
  bool mixed_sources = false;  // its replies come from different policies or temperatures
};

// The strategy's score, higher = ask sooner:
// - uncertainty: 1 - |2 p - 1| with p = sigmoid(mean margin): 1 at a coin flip, 0 when sure;
// - disagreement: the standard deviation over members of sigmoid(margin) (needs 2 or more members);
// - diversity: 1 for mixed sources, else 0;
// - gradient: the expected length of the Bradley-Terry log-likelihood's
//   gradient with respect to the score head's weights, were the pair labelled
//   as the model predicts: 2 p (1 - p) |h(a) - h(b)|, averaged over members.
//   Unlike uncertainty it passes over near-identical replies (the model's
//   coin flips that teach it nothing: often true ties);
// - badge: the length of the gradient embedding that `kmeans_pp_picks`
//   spreads, (1 - q) |h(a) - h(b)| with q = max(p, 1 - p) (the predicted
//   label's probability), averaged over members; the order of a batch comes
//   from kmeans_pp_picks, this score orders what follows it;
// - random: 0 (the order is then the random tie-break alone).
double selection_score(SelectionStrategy strategy, const ComparisonSignals& signals);

struct SelectionPick {
  size_t index = 0;           // into the scores given
  bool random_floor = false;  // picked at random to keep the floor, not by score
};
// Every index of `scores` in the order to label them. Position i (from 0) is
// a random pick when floor((i + 1) f) > floor(i f), f = `random_floor`, so
// any first n picks hold floor(n f) random ones; the other positions take
// the highest score left. Equal scores are ordered at random. All draws come
// from `seed`.
//
// `groups`, if given (one per score, e.g. the comparison's prompt), spreads
// the picks by score over the groups: every group's highest-scoring
// comparison comes before any group's second, and so on (within one such
// rank, highest score first). A round's picks then cover the prompts as
// evenly as random picks do, and within each prompt take its best
// comparisons; without it a strategy can spend a round on a few hundred
// prompts whose replies happen to score high.
std::vector<SelectionPick> order_for_labelling(const std::vector<double>& scores, double random_floor, uint64_t seed,
                                               const std::vector<int64_t>& groups = {});

// BADGE's batch (Ash et al., "Deep Batch Active Learning by Diverse,
// Uncertain Gradient Lower Bounds", 2020): the first `k` picks of k-means++
// seeding over `points` (n rows of `dim` floats, row-major), each row a
// comparison's gradient embedding. The row of largest norm comes first; each
// next is drawn with probability proportional to its squared distance to the
// nearest row picked so far. So a batch takes large (uncertain, informative)
// gradients, and a near-copy of a pick (another pair of the same kind) is
// unlikely until different kinds are covered; exact copies never are while
// distinct rows are left. Returns min(k, n) distinct row indices in pick
// order. Draws from `seed`.
std::vector<size_t> kmeans_pp_picks(const std::vector<float>& points, size_t dim, size_t k, uint64_t seed);

}  // namespace rlhf::labels

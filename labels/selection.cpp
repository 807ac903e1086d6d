#include "labels/selection.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "common/error.h"
#include "common/hash.h"

namespace rlhf::labels {
namespace {

constexpr SelectionStrategy kStrategies[] = {SelectionStrategy::kRandom, SelectionStrategy::kUncertainty,
                                             SelectionStrategy::kDisagreement, SelectionStrategy::kDiversity,
                                             SelectionStrategy::kGradient, SelectionStrategy::kBadge};

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// A uniformly random order of 0..n-1 (Fisher-Yates on SplitMix draws).
std::vector<size_t> random_order(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  SplitMix rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(order[i - 1], order[rng.next() % i]);
  return order;
}

}  // namespace

const char* selection_strategy_name(SelectionStrategy s) {
  switch (s) {
    case SelectionStrategy::kRandom: return "random";
    case SelectionStrategy::kUncertainty: return "uncertainty";
    case SelectionStrategy::kDisagreement: return "disagreement";
    case SelectionStrategy::kDiversity: return "diversity";
    case SelectionStrategy::kGradient: return "gradient";
    case SelectionStrategy::kBadge: return "badge";
  }
  return "?";
}

SelectionStrategy parse_selection_strategy(const std::string& name, const std::string& field) {
  for (SelectionStrategy s : kStrategies) {
    if (name == selection_strategy_name(s)) return s;
  }
  fail(ErrorKind::kConfig, field, " = \"", name,
       "\" is not a selection strategy: use random, uncertainty, gradient, badge, disagreement or diversity");
}

double selection_score(SelectionStrategy strategy, const ComparisonSignals& signals) {
  switch (strategy) {
    case SelectionStrategy::kRandom: return 0.0;
    case SelectionStrategy::kDiversity: return signals.mixed_sources ? 1.0 : 0.0;
    case SelectionStrategy::kUncertainty: {
      if (signals.margins.empty()) fail(ErrorKind::kConfig, "uncertainty selection needs a reward model's scores of the replies");
      double mean = 0;
      for (double m : signals.margins) mean += m / static_cast<double>(signals.margins.size());
      return 1.0 - std::abs(2.0 * sigmoid(mean) - 1.0);
    }
    case SelectionStrategy::kGradient:
    case SelectionStrategy::kBadge: {
      const size_t n = signals.margins.size();
      if (n == 0 || signals.feature_distances.size() != n) {
        fail(ErrorKind::kConfig, selection_strategy_name(strategy),
             " selection needs a reward model's scores and features of the replies");
      }
      double length = 0;
      for (size_t m = 0; m < n; ++m) {
        const double p = sigmoid(signals.margins[m]);
        const double weight = strategy == SelectionStrategy::kGradient ? 2.0 * p * (1.0 - p) : 1.0 - std::max(p, 1.0 - p);
        length += weight * signals.feature_distances[m] / static_cast<double>(n);
      }
      return length;
    }
    case SelectionStrategy::kDisagreement: {
      const size_t n = signals.margins.size();
      if (n < 2) {
        fail(ErrorKind::kConfig, "disagreement selection needs two or more reward models (an ensemble); got ", n);
      }
      double mean = 0, var = 0;
      for (double m : signals.margins) mean += sigmoid(m) / static_cast<double>(n);
      for (double m : signals.margins) var += (sigmoid(m) - mean) * (sigmoid(m) - mean) / static_cast<double>(n);
      return std::sqrt(var);
    }
  }
  return 0.0;
}

std::vector<SelectionPick> order_for_labelling(const std::vector<double>& scores, double random_floor, uint64_t seed,
                                               const std::vector<int64_t>& groups) {
  if (!(random_floor >= 0.0 && random_floor <= 1.0)) {
    fail(ErrorKind::kConfig, "random_floor = ", random_floor, " must be between 0 and 1 (the share of random picks)");
  }
  const size_t n = scores.size();
  if (!groups.empty() && groups.size() != n) {
    fail(ErrorKind::kData, "order_for_labelling: ", groups.size(), " groups for ", n, " scores");
  }
  // By score, highest first; equal scores in a random order.
  std::vector<size_t> by_score = random_order(n, mix_seed({seed, 0x5c0e}));
  std::stable_sort(by_score.begin(), by_score.end(), [&](size_t a, size_t b) { return scores[a] > scores[b]; });
  if (!groups.empty()) {
    // Each index's rank within its group, then by rank (stable: by score within a rank).
    std::vector<size_t> rank(n);
    std::map<int64_t, size_t> seen;
    for (size_t i : by_score) rank[i] = seen[groups[i]]++;
    std::stable_sort(by_score.begin(), by_score.end(), [&](size_t a, size_t b) { return rank[a] < rank[b]; });
  }
  // The random picks walk an independent random order: its next untaken
  // index is uniform over those left.
  const std::vector<size_t> shuffled = random_order(n, mix_seed({seed, 0xf100}));
  std::vector<bool> taken(n, false);
  std::vector<SelectionPick> out;
  out.reserve(n);
  size_t next_best = 0, next_random = 0;
  for (size_t i = 0; i < n; ++i) {
    // (The epsilon keeps a product like 10 x 0.3 from landing just below 3.)
    const bool floor_pick = std::floor((i + 1) * random_floor + 1e-9) > std::floor(i * random_floor + 1e-9);
    const std::vector<size_t>& from = floor_pick ? shuffled : by_score;
    size_t& cursor = floor_pick ? next_random : next_best;
    while (taken[from[cursor]]) ++cursor;
    taken[from[cursor]] = true;
    out.push_back({from[cursor], floor_pick});
  }
  return out;
}

std::vector<size_t> kmeans_pp_picks(const std::vector<float>& points, size_t dim, size_t k, uint64_t seed) {
  if (dim == 0 || points.size() % dim != 0) {
    fail(ErrorKind::kData, "kmeans_pp_picks: ", points.size(), " values are not rows of ", dim);
  }
  const size_t n = points.size() / dim;
  k = std::min(k, n);
  std::vector<size_t> picks;
  if (k == 0) return picks;
  picks.reserve(k);
  // Squared distance of each row to its nearest pick; before any pick, to
  // the origin (so the first pick is the largest gradient).
  std::vector<double> nearest(n);
  for (size_t i = 0; i < n; ++i) {
    double s = 0;
    for (size_t d = 0; d < dim; ++d) s += static_cast<double>(points[i * dim + d]) * points[i * dim + d];
    nearest[i] = s;
  }
  std::vector<bool> taken(n, false);
  SplitMix rng(mix_seed({seed, 0xbad9e}));
  size_t pick = static_cast<size_t>(std::max_element(nearest.begin(), nearest.end()) - nearest.begin());
  while (true) {
    picks.push_back(pick);
    taken[pick] = true;
    if (picks.size() == k) break;
    const float* c = &points[pick * dim];
    double total = 0;
    for (size_t i = 0; i < n; ++i) {
      if (taken[i]) continue;
      const float* x = &points[i * dim];
      float s = 0;
      for (size_t d = 0; d < dim; ++d) s += (x[d] - c[d]) * (x[d] - c[d]);
      nearest[i] = std::min(nearest[i], static_cast<double>(s));
      total += nearest[i];
    }
    // Draw proportional to the squared distance; when every row left sits on
    // a pick (all zero), uniformly among them.
    const double u = static_cast<double>(rng.next() >> 11) * 0x1.0p-53;
    size_t next = n;
    if (total > 0) {
      double target = u * total, run = 0;
      for (size_t i = 0; i < n; ++i) {
        if (taken[i] || nearest[i] <= 0) continue;
        next = i;  // the last candidate, should rounding leave target above the sum
        run += nearest[i];
        if (run > target) break;
      }
    } else {
      size_t left = n - picks.size(), skip = static_cast<size_t>(u * static_cast<double>(left));
      for (size_t i = 0; i < n; ++i) {
        if (taken[i]) continue;
        if (skip-- == 0) { next = i; break; }
      }
    }
    pick = next;
  }
  return picks;
}

}  // namespace rlhf::labels

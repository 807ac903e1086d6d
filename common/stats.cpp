#include "common/stats.h"

#include <algorithm>

#include "common/hash.h"

namespace rlhf {

WinRate win_rate(const std::vector<double>& outcomes, int bootstrap, uint64_t seed) {
  WinRate w;
  w.n = static_cast<int>(outcomes.size());
  if (outcomes.empty()) return w;
  double sum = 0;
  for (double o : outcomes) {
    sum += o;
    w.wins += o == 1.0;
    w.ties += o == 0.5;
    w.losses += o == 0.0;
  }
  w.rate = sum / w.n;
  std::vector<double> means;
  SplitMix rng(seed);
  for (int b = 0; b < bootstrap; ++b) {
    double s = 0;
    for (int i = 0; i < w.n; ++i) s += outcomes[rng.below(static_cast<uint64_t>(w.n))];
    means.push_back(s / w.n);
  }
  std::sort(means.begin(), means.end());
  if (!means.empty()) {
    w.lo = means[static_cast<size_t>(0.025 * (means.size() - 1))];
    w.hi = means[static_cast<size_t>(0.975 * (means.size() - 1))];
  }
  return w;
}

}  // namespace rlhf

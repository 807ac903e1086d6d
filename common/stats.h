// Small statistics shared by the comparison report and the rater tool's
// compare view (no LibTorch).
#pragma once

#include <cstdint>
#include <vector>

namespace rlhf {

// A win rate with its bootstrap 95% interval. Outcomes: 1 win, 0.5 tie, 0 loss.
struct WinRate {
  double rate = 0, lo = 0, hi = 0;
  int n = 0, wins = 0, ties = 0, losses = 0;
};
WinRate win_rate(const std::vector<double>& outcomes, int bootstrap, uint64_t seed);

}  // namespace rlhf

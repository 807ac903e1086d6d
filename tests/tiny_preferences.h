// Preference pairs for the reward-model tests: the same customer question
// with a new order number each time, a friendly reply preferred over a curt one.
#pragma once

#include <string>
#include <vector>

#include "reward/preference.h"

namespace rlhf::test {

inline std::vector<PreferencePair> polite_over_curt_pairs(int n, const std::string& chosen,
                                                          const std::string& rejected) {
  std::vector<PreferencePair> pairs;
  for (int i = 0; i < n; ++i) {
    PreferencePair p;
    p.prompt = {{"user", "Where is order #" + std::to_string(10000 + i) + "?"}};
    p.chosen = chosen;
    p.rejected = rejected;
    pairs.push_back(p);
  }
  return pairs;
}

}  // namespace rlhf::test

// A small label store for the service and rater tests: `pairs` comparisons
// of two candidates each (and optional rankings of three), each needing
// `required` raters.
#pragma once

#include <string>

#include "labels/store.h"
#include "labels/token.h"

namespace rlhf::test {

inline void fill_label_store(labels::LabelStore& store, int pairs, int required = 1, int rankings = 0) {
  for (int i = 0; i < pairs + rankings; ++i) {
    const Json messages = Json::array({{{"role", "user"}, {"content", "Where is order #" + std::to_string(1000 + i) + "?"}}});
    const int64_t p = store.add_prompt(messages, nullptr);
    std::vector<int64_t> cands;
    const int k = i < pairs ? 2 : 3;
    for (int c = 0; c < k; ++c)
      cands.push_back(store.add_candidate(p, "reply " + std::to_string(c) + " to order " + std::to_string(1000 + i),
                                          true, "policy-" + std::to_string(c), nullptr));
    store.add_comparison(p, cands, required);
  }
}

// Adds a rater and returns the token it was given.
inline std::string add_rater_with_token(labels::LabelStore& store, const std::string& name) {
  const std::string token = labels::new_rater_token();
  store.add_rater(name, labels::sha256_hex(token), "human");
  return token;
}

// A new store at `path` with `pairs` comparisons and one rater; returns the rater's token.
inline std::string store_with_rater(const std::string& path, int pairs, int required = 1,
                                    const std::string& rater = "ann") {
  labels::LabelStore store(path);
  fill_label_store(store, pairs, required);
  return add_rater_with_token(store, rater);
}

}  // namespace rlhf::test

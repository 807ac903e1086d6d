// Agreement between raters: Cohen's kappa for a pair of raters, Krippendorff's
// alpha (nominal) over everyone, and per-rater accuracy on gold items. These
// are the numbers a team checks before trusting a label set (InstructGPT
// reports ~73% raw inter-rater agreement on comparisons).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "labels/store.h"

namespace rlhf::labels {

// Cohen's kappa for two raters' categories on the same items (equal length).
// NaN when there are no items; 1 when both used one category and agreed.
double cohen_kappa(const std::vector<int>& a, const std::vector<int>& b);

// Krippendorff's alpha for nominal data. `units[u]` holds the categories the
// raters gave unit u; units with fewer than two values are not pairable and
// are ignored. NaN when nothing is pairable; 1 when there is no variation.
double krippendorff_alpha_nominal(const std::vector<std::vector<int>>& units);

struct RaterSummary {
  std::string name;
  size_t labels = 0;
  size_t gold_seen = 0, gold_correct = 0;
};
struct PairAgreement {
  std::string a, b;
  size_t common = 0;    // pair comparisons both labelled
  double agree = 0;     // raw agreement
  double kappa = 0;
};
struct AgreementReport {
  std::vector<RaterSummary> raters;
  std::vector<PairAgreement> pairs;  // rater pairs with at least one common item
  double alpha = 0;                  // Krippendorff's alpha over pair comparisons
  size_t alpha_units = 0;            // comparisons with two or more labels
};

// Pair comparisons only (choices a / b / tie / both bad, relative to the
// stored candidates, so the order each rater saw does not matter).
AgreementReport agreement_report(LabelStore& store);
std::string format_agreement(const AgreementReport& r);

}  // namespace rlhf::labels

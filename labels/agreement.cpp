#include "labels/agreement.h"

#include <cmath>
#include <cstdio>
#include <limits>
#include <map>

#include "common/error.h"

namespace rlhf::labels {

double cohen_kappa(const std::vector<int>& a, const std::vector<int>& b) {
  if (a.size() != b.size()) fail(ErrorKind::kUsage, "cohen_kappa: ", a.size(), " vs ", b.size(), " items");
  const double n = static_cast<double>(a.size());
  if (a.empty()) return std::numeric_limits<double>::quiet_NaN();
  std::map<int, double> pa, pb;
  double agree = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    agree += a[i] == b[i];
    pa[a[i]] += 1 / n;
    pb[b[i]] += 1 / n;
  }
  const double po = agree / n;
  double pe = 0;
  for (auto& [c, p] : pa) pe += p * (pb.count(c) ? pb[c] : 0.0);
  if (pe >= 1.0 - 1e-12) return po >= 1.0 - 1e-12 ? 1.0 : 0.0;
  return (po - pe) / (1 - pe);
}

double krippendorff_alpha_nominal(const std::vector<std::vector<int>>& units) {
  std::map<std::pair<int, int>, double> o;  // coincidences
  for (const auto& u : units) {
    const size_t m = u.size();
    if (m < 2) continue;
    for (size_t i = 0; i < m; ++i)
      for (size_t j = 0; j < m; ++j)
        if (i != j) o[{u[i], u[j]}] += 1.0 / static_cast<double>(m - 1);
  }
  std::map<int, double> nc;
  double n = 0;
  for (auto& [ck, v] : o) nc[ck.first] += v, n += v;
  if (n == 0) return std::numeric_limits<double>::quiet_NaN();
  double disagree_o = 0;
  for (auto& [ck, v] : o)
    if (ck.first != ck.second) disagree_o += v;
  double disagree_e = 0;
  for (auto& [c, x] : nc)
    for (auto& [k, y] : nc)
      if (c != k) disagree_e += x * y;
  if (disagree_e == 0) return 1.0;
  return 1.0 - (n - 1) * disagree_o / disagree_e;
}

AgreementReport agreement_report(LabelStore& store) {
  AgreementReport r;
  std::map<int64_t, std::string> names;
  std::map<int64_t, size_t> index;
  for (const Rater& rt : store.raters()) {
    names[rt.id] = rt.name;
    index[rt.id] = r.raters.size();
    r.raters.push_back({rt.name});
  }
  std::map<int64_t, Comparison> comps;
  for (const Comparison& c : store.comparisons()) comps[c.id] = c;
  std::map<int64_t, std::map<int64_t, int>> by_comp;  // comparison -> rater -> choice
  for (const Label& l : store.labels()) {
    auto& s = r.raters[index.at(l.rater_id)];
    ++s.labels;
    const Comparison& c = comps.at(l.comparison_id);
    if (c.is_gold && c.gold_answer.is_object() && c.gold_answer.contains("choice")) {
      ++s.gold_seen;
      s.gold_correct += c.gold_answer["choice"].get<std::string>() == choice_name(l.choice);
    }
    if (!c.is_ranking() && l.choice != Choice::kRanking) by_comp[l.comparison_id][l.rater_id] = static_cast<int>(l.choice);
  }
  std::vector<std::vector<int>> units;
  for (auto& [cid, m] : by_comp) {
    std::vector<int> u;
    for (auto& [rid, ch] : m) u.push_back(ch);
    if (u.size() >= 2) units.push_back(u), ++r.alpha_units;
  }
  r.alpha = krippendorff_alpha_nominal(units);
  for (auto i = names.begin(); i != names.end(); ++i)
    for (auto j = std::next(i); j != names.end(); ++j) {
      std::vector<int> a, b;
      for (auto& [cid, m] : by_comp) {
        auto x = m.find(i->first), y = m.find(j->first);
        if (x != m.end() && y != m.end()) a.push_back(x->second), b.push_back(y->second);
      }
      if (a.empty()) continue;
      PairAgreement p{i->second, j->second, a.size()};
      for (size_t k = 0; k < a.size(); ++k) p.agree += a[k] == b[k];
      p.agree /= static_cast<double>(a.size());
      p.kappa = cohen_kappa(a, b);
      r.pairs.push_back(p);
    }
  return r;
}

std::string format_agreement(const AgreementReport& r) {
  std::string out = "rater                labels   gold accuracy\n";
  char line[256];
  for (const auto& s : r.raters) {
    if (s.gold_seen > 0)
      std::snprintf(line, sizeof line, "%-20s %6zu   %5.1f%% (%zu/%zu)\n", s.name.c_str(), s.labels,
                    100.0 * s.gold_correct / s.gold_seen, s.gold_correct, s.gold_seen);
    else
      std::snprintf(line, sizeof line, "%-20s %6zu   -\n", s.name.c_str(), s.labels);
    out += line;
  }
  if (r.pairs.empty()) {
    out += "\nno comparison has labels from two raters yet: no agreement to report\n";
    return out;
  }
  out += "\nrater pair                              common   agreement   Cohen's kappa\n";
  for (const auto& p : r.pairs) {
    std::snprintf(line, sizeof line, "%-38s %7zu   %8.1f%%   %13.3f\n", (p.a + " / " + p.b).c_str(), p.common,
                  100 * p.agree, p.kappa);
    out += line;
  }
  std::snprintf(line, sizeof line, "\nKrippendorff's alpha (nominal): %.3f over %zu comparisons with 2+ labels\n",
                r.alpha, r.alpha_units);
  out += line;
  return out;
}

}  // namespace rlhf::labels

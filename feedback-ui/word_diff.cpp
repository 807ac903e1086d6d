#include "feedback-ui/word_diff.h"

#include <cctype>
#include <algorithm>
#include <cstdint>

namespace rlhf::ui {
namespace {

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// Words with their trailing whitespace; leading whitespace is a span of its own.
std::vector<DiffSpan> split_words(const std::string& text) {
  std::vector<DiffSpan> out;
  size_t i = 0;
  if (i < text.size() && is_space(text[i])) {
    while (i < text.size() && is_space(text[i])) ++i;
    out.push_back({text.substr(0, i), false});
  }
  while (i < text.size()) {
    const size_t start = i;
    while (i < text.size() && !is_space(text[i])) ++i;
    while (i < text.size() && is_space(text[i])) ++i;
    out.push_back({text.substr(start, i - start), false});
  }
  return out;
}

// The word itself, for comparing: whitespace after it does not count.
std::string word_of(const DiffSpan& s) {
  size_t end = s.text.size();
  while (end > 0 && is_space(s.text[end - 1])) --end;
  return s.text.substr(0, end);
}

}  // namespace

std::vector<DiffSpan> word_spans(const std::string& text) { return split_words(text); }

WordDiff word_diff(const std::string& a, const std::string& b, size_t max_words) {
  WordDiff d{split_words(a), split_words(b)};
  const size_t n = d.a.size(), m = d.b.size();
  if (n > max_words || m > max_words) return d;
  std::vector<std::string> wa(n), wb(m);
  for (size_t i = 0; i < n; ++i) wa[i] = word_of(d.a[i]);
  for (size_t j = 0; j < m; ++j) wb[j] = word_of(d.b[j]);
  // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
  std::vector<uint32_t> lcs((n + 1) * (m + 1), 0);
  auto at = [&](size_t i, size_t j) -> uint32_t& { return lcs[i * (m + 1) + j]; };
  for (size_t i = n; i-- > 0;) {
    for (size_t j = m; j-- > 0;) {
      at(i, j) = wa[i] == wb[j] ? at(i + 1, j + 1) + 1 : std::max(at(i + 1, j), at(i, j + 1));
    }
  }
  size_t i = 0, j = 0;
  while (i < n && j < m) {
    if (wa[i] == wb[j]) {
      ++i, ++j;
    } else if (at(i + 1, j) >= at(i, j + 1)) {
      d.a[i].changed = !wa[i].empty();
      ++i;
    } else {
      d.b[j].changed = !wb[j].empty();
      ++j;
    }
  }
  for (; i < n; ++i) d.a[i].changed = !wa[i].empty();
  for (; j < m; ++j) d.b[j].changed = !wb[j].empty();
  return d;
}

}  // namespace rlhf::ui

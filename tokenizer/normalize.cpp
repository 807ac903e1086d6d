#include "tokenizer/normalize.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace rlhf {
namespace {

#include "tokenizer/unicode_tables.inc"

// Hangul syllables compose and decompose by arithmetic (Unicode 3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

int combining_class(uint32_t cp) {
  if (cp < 0x300) return 0;
  const auto* end = kCombiningClass + sizeof(kCombiningClass) / sizeof(kCombiningClass[0]);
  const auto* it = std::lower_bound(kCombiningClass, end, cp, [](const uint32_t (&e)[2], uint32_t v) { return e[0] < v; });
  return it != end && (*it)[0] == cp ? static_cast<int>((*it)[1]) : 0;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto* end = kDecomposition + sizeof(kDecomposition) / sizeof(kDecomposition[0]);
  const auto* it = std::lower_bound(kDecomposition, end, cp, [](const uint32_t (&e)[3], uint32_t v) { return e[0] < v; });
  if (it == end || (*it)[0] != cp) {
    out.push_back(cp);
    return;
  }
  out.insert(out.end(), kDecompositionPool + (*it)[1], kDecompositionPool + (*it)[1] + (*it)[2]);
}

// The primary composite of a pair, or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  const auto* end = kComposition + sizeof(kComposition) / sizeof(kComposition[0]);
  const auto* it = std::lower_bound(kComposition, end, std::make_pair(a, b), [](const uint32_t (&e)[3], const auto& v) {
    return e[0] < v.first || (e[0] == v.first && e[1] < v.second);
  });
  return it != end && (*it)[0] == a && (*it)[1] == b ? (*it)[2] : 0;
}

bool decode_utf8(std::string_view s, std::vector<uint32_t>& out) {
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n;
    uint32_t cp;
    if (c < 0x80) { n = 1; cp = c; }
    else if ((c >> 5) == 6) { n = 2; cp = c & 0x1f; }
    else if ((c >> 4) == 14) { n = 3; cp = c & 0x0f; }
    else if ((c >> 3) == 30) { n = 4; cp = c & 0x07; }
    else return false;
    if (i + n > s.size()) return false;
    for (int k = 1; k < n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc >> 6) != 2) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    out.push_back(cp);
    i += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

std::string nfc(std::string_view text) {
  // Below U+0300 every character is already composed and composes with nothing before it.
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0xCC; })) {
    return std::string(text);
  }
  std::vector<uint32_t> cps;
  if (!decode_utf8(text, cps)) return std::string(text);
  std::vector<uint32_t> d;
  d.reserve(cps.size() + 8);
  for (uint32_t cp : cps) decompose(cp, d);
  // Canonical ordering: marks between starters sorted (stably) by class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<long>(i), d.begin() + static_cast<long>(j),
                     [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition: each mark joins the last starter unless blocked.
  std::vector<uint32_t> out;
  out.reserve(d.size());
  long starter = -1;
  int last_class = 0;
  for (uint32_t cp : d) {
    const int cls = combining_class(cp);
    if (starter >= 0) {
      const bool adjacent = static_cast<long>(out.size()) == starter + 1;
      if (adjacent || (last_class != 0 && last_class < cls)) {
        if (const uint32_t c = compose(out[static_cast<size_t>(starter)], cp)) {
          out[static_cast<size_t>(starter)] = c;
          continue;
        }
      }
    }
    if (cls == 0) {
      starter = static_cast<long>(out.size());
      last_class = 0;
    } else {
      last_class = cls;
    }
    out.push_back(cp);
  }
  std::string s;
  s.reserve(text.size());
  for (uint32_t cp : out) append_utf8(s, cp);
  return s;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

}  // namespace rlhf

// Word-level differences between two replies, for the rater's highlighting:
// each text split into spans, marked where its words are not in the longest
// common subsequence of the two texts' words. Whitespace stays with the word
// before it, so joining a text's spans gives the text back.
#pragma once

#include <string>
#include <vector>

namespace rlhf::ui {

struct DiffSpan {
  std::string text;      // one word with the whitespace after it (or leading whitespace)
  bool changed = false;  // not shared with the other text
};

struct WordDiff {
  std::vector<DiffSpan> a, b;
};

// The text's spans, none marked.
std::vector<DiffSpan> word_spans(const std::string& text);

// Texts over `max_words` words each are not compared (every span unchanged):
// the table is words(a) x words(b).
WordDiff word_diff(const std::string& a, const std::string& b, size_t max_words = 2000);

}  // namespace rlhf::ui

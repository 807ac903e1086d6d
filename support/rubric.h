// The gold rubric: the simulated rater's judgement of a support reply.
// Documented in docs/rubric.md. Used to label comparisons (with noise) and to
// measure policies; never as PPO's training signal.
#pragma once

#include <string>
#include <vector>

#include "common/config.h"

namespace rlhf::support {

// What the conversation is about: from a prompt's metadata, or inferred from
// its text when there is none.
struct CaseFacts {
  std::string intent;      // e.g. "refund_status"; empty = unknown (intent not scored)
  std::string first_name;  // empty when the customer gave none
  std::string order;       // five digits; empty when the case has no order
  std::string product;     // the customer's product; empty when unknown
};

CaseFacts facts_from_metadata(const Json& metadata);
// Order number: the last five-digit number the customer wrote; first name:
// a known first name the customer wrote; product: the last catalogue product
// the customer named. The intent cannot be inferred.
CaseFacts infer_facts(const std::vector<std::string>& customer_turns);

struct GoldScore {
  double total = 0;
  // The rubric's findings, for reports.
  bool on_intent = false, right_order = false, invented_order = false, used_name = false, wrong_name = false,
       invented_policy = false, polite = false, rude = false, closing = false, clipped = false, rambling = false,
       repetitive = false, ended = false;
  // What a customer would not accept however the rest reads: a catalogue
  // product other than theirs, broken or repeated fragments of words, and an
  // action that belongs to another request (a cancellation when they asked
  // where the order is).
  bool wrong_product = false, garbled = false, wrong_action = false;
  int words = 0;
  Json to_json() const;
};

// `finished`: the reply ended with the end-of-turn token (not cut off).
GoldScore gold_score(const CaseFacts& facts, const std::string& reply, bool finished);

// The highest score the rubric gives (every point earned).
double gold_max();

// Catalogue products a text names, by full name or by the name without its
// first word ("Tower Fan" for the Breeze Tower Fan); each product once.
std::vector<std::string> products_named(const std::string& text);

// Words of `text` (lower case, digits-only words and order numbers left out)
// that Larkspur's vocabulary does not have: the words of every conversation,
// prompt, product and name the support generator writes.
std::vector<std::string> unknown_words(const std::string& text);

// Which store actions a reply performs ("cancel", "replace", "refund", ...):
// see docs/rubric.md for the phrases.
std::vector<std::string> actions_in(const std::string& reply);
// The actions that belong to an intent (its good replies perform them).
const std::vector<std::string>& actions_for_intent(const std::string& intent);

}  // namespace rlhf::support

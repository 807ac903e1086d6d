// The gold rubric: the simulated rater's judgement of a support reply.
// Documented in docs/rubric.md. Used to label comparisons (with noise) and to
// measure policies; never as PPO's training signal.
#pragma once

#include <string>

#include "common/config.h"

namespace rlhf::support {

// What the conversation is about: from a prompt's metadata, or inferred from
// its text when there is none.
struct CaseFacts {
  std::string intent;      // e.g. "refund_status"; empty = unknown (intent not scored)
  std::string first_name;  // empty when the customer gave none
  std::string order;       // five digits; empty when the case has no order
  std::string product;     // product name (product questions)
};

CaseFacts facts_from_metadata(const Json& metadata);
// Order number: the last five-digit number the customer wrote; first name:
// a known first name the customer wrote. The intent cannot be inferred.
CaseFacts infer_facts(const std::vector<std::string>& customer_turns);

struct GoldScore {
  double total = 0;
  // The rubric's findings, for reports.
  bool on_intent = false, right_order = false, invented_order = false, used_name = false, wrong_name = false,
       invented_policy = false, polite = false, rude = false, closing = false, clipped = false, rambling = false,
       repetitive = false, ended = false;
  int words = 0;
  Json to_json() const;
};

// `finished`: the reply ended with the end-of-turn token (not cut off).
GoldScore gold_score(const CaseFacts& facts, const std::string& reply, bool finished);

// The highest score the rubric gives (every point earned).
double gold_max();

}  // namespace rlhf::support

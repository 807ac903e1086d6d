// The customer-support domain: Larkspur, a fictional online home-goods
// store. Its policies, products, customer names and the intents customers
// write about. The dataset generator writes conversations from these facts,
// and the gold rubric (the simulated rater) checks replies against them.
#pragma once

#include <string>
#include <vector>

namespace rlhf::support {

inline constexpr const char* kStoreName = "Larkspur";
inline constexpr const char* kSystemPrompt =
    "You are a support agent for Larkspur, an online home goods store. Be polite, use the "
    "customer's name and order number, and follow store policy.";

struct Product {
  std::string name;      // "Aero Blender"
  std::string question;  // what a customer asks, e.g. "how big is the jar on the {product}"
  std::string answer;    // the fact, e.g. "the Aero Blender has a 1.5-litre jar and six speeds"
  std::vector<std::string> fact_words;  // words a correct answer contains, e.g. {"1.5-litre"}
};

struct Intent {
  std::string id;           // "refund_status"
  bool needs_order;         // the reply should name the order number
  // Words of which a reply that addresses the intent contains at least one
  // from every group, e.g. {{"refund"}, {"5-7 business days", "original payment"}}.
  std::vector<std::vector<std::string>> keyword_groups;
  // Policy figures a correct reply may state ("5-7 business days"); any
  // other figure of time or percentage is an invented policy.
  std::vector<std::string> allowed_figures;
};

const std::vector<Intent>& intents();
const Intent& intent(const std::string& id);  // throws on an unknown id
const std::vector<Product>& products();
const Product* find_product(const std::string& name);

// Names: the training set and the held-out prompts draw from disjoint lists,
// so validation asks about people the model never saw.
const std::vector<std::string>& first_names(bool heldout);
const std::vector<std::string>& last_names(bool heldout);
// Every first name of either list (the rubric's name check).
bool is_known_first_name(const std::string& word);

// Phrases that make a reply rude, and phrases that make it polite.
const std::vector<std::string>& rude_phrases();
const std::vector<std::string>& polite_phrases();

}  // namespace rlhf::support

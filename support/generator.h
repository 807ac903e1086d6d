// The deterministic generator of the shipped customer-support dataset
// (data/support/): SFT conversations in the `messages` format with agent
// replies of mixed quality, a validation split, and held-out prompts with
// names, order numbers and phrasings never seen in training.
//
//   rlhf support-data --out data/support --seed 7
//
// The same seed gives the same files byte for byte. See data/support/README.md
// for the mix of reply styles and why it is there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"

namespace rlhf::support {

struct GeneratorConfig {
  int64_t seed = 7;               // everything below is drawn from this seed
  int train_dialogues = 3200;     // SFT training conversations, e.g. 3200
  int val_dialogues = 320;        // validation conversations (loss only)
  int heldout_prompts = 240;      // held-out prompts for validation and comparison
  int rl_prompts = 2400;          // prompts for reward modelling and PPO (training names and phrasings)
  double multi_turn = 0.3;        // share of conversations with more than one agent turn
  // Styles of agent reply (the rest are "good"); later stages need room to
  // improve on SFT, as real support logs have.
  double p_terse = 0.14;          // one short line: no greeting, name, order or closing
  double p_curt = 0.08;           // rude tone
  double p_off_topic = 0.06;      // answers a different question
  double p_wrong_policy = 0.08;   // states a figure that contradicts store policy
  // Within "good" replies, each element appears independently:
  double p_use_name = 0.6;        // greets the customer by first name
  double p_use_order = 0.65;      // names the order number
  double p_ack = 0.7;             // thanks or apologises before the answer
  double p_closing = 0.55;        // offers further help at the end
  template <class V> void visit(V& v) {
    v("seed", seed);
    v("train_dialogues", train_dialogues);
    v("val_dialogues", val_dialogues);
    v("heldout_prompts", heldout_prompts);
    v("rl_prompts", rl_prompts);
    v("multi_turn", multi_turn);
    v("p_terse", p_terse);
    v("p_curt", p_curt);
    v("p_off_topic", p_off_topic);
    v("p_wrong_policy", p_wrong_policy);
    v("p_use_name", p_use_name);
    v("p_use_order", p_use_order);
    v("p_ack", p_ack);
    v("p_closing", p_closing);
  }
};

struct SupportData {
  std::vector<Json> train;    // {"messages": [...], "metadata": {...}}
  std::vector<Json> val;
  std::vector<Json> heldout;  // {"prompt": [...messages ending with the user's turn], "metadata": {...}}
  std::vector<Json> rl;       // same shape; training distribution, for the reward model and PPO
};

SupportData generate_support_data(const GeneratorConfig& config);

// The templates of a good agent's answer to `intent`, with their {oref},
// {product}, {date} and {answer} holes unfilled (the rubric reads which store
// actions belong to an intent from them). Throws on an unknown intent.
const std::vector<std::string>& good_reply_templates(const std::string& intent);

// Writes train.jsonl, val.jsonl, heldout_prompts.jsonl and rl_prompts.jsonl into `dir`.
void write_support_data(const SupportData& data, const std::string& dir);

// One JSON object per line, keys in a fixed order, UTF-8: byte-stable.
std::string to_jsonl(const std::vector<Json>& rows);

}  // namespace rlhf::support

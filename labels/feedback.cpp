#include "labels/feedback.h"

#include <cmath>

#include "common/error.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "support/rubric.h"
#include "train/progress.h"
#include "train/runtime.h"

namespace rlhf::labels {

CandidatesResult queue_candidates(const CandidatesConfig& c) {
  if (c.k < 2) fail(ErrorKind::kConfig, "candidates: k must be at least 2 (a comparison needs two replies)");
  if (c.policies.empty() || c.temperatures.empty()) fail(ErrorKind::kConfig, "candidates: name a policy and a temperature");
  if (c.pairs != "adjacent" && c.pairs != "all" && c.pairs != "ranking") {
    fail(ErrorKind::kConfig, "candidates.pairs must be \"adjacent\", \"all\" or \"ranking\", not \"", c.pairs, "\"");
  }
  sampling_weights_dtype(c.weights, "candidates.weights");
  set_torch_threads(c.threads);
  PhaseTimer times;
  times.start("store");
  LabelStore store(c.db);
  struct Item {
    Json source, metadata;
    Conversation conv;
    int64_t prompt_id;
    std::vector<int64_t> candidates;
  };
  std::vector<Item> items;
  read_jsonl(c.prompts, [&](const Json& obj, size_t line) {
    if (c.max_prompts > 0 && static_cast<int>(items.size()) >= c.max_prompts) return;
    Conversation conv = prompt_from_json(obj, c.prompts, line, "");
    Json source = obj.contains("prompt") ? obj["prompt"] : conversation_to_json(conv);
    items.push_back({source, obj.value("metadata", Json()), conv, 0, {}});
  });
  if (items.empty()) fail(ErrorKind::kData, c.prompts, ": no prompts");
  for (auto& it : items) it.prompt_id = store.add_prompt(it.source, it.metadata);

  // Which (policy, temperature) writes each of the K replies: round robin.
  std::vector<std::pair<size_t, size_t>> slots;
  for (int s = 0; s < c.k; ++s) {
    const size_t combo = static_cast<size_t>(s) % (c.policies.size() * c.temperatures.size());
    slots.emplace_back(combo / c.temperatures.size(), combo % c.temperatures.size());
  }
  CandidatesResult result;
  result.prompts = items.size();
  for (size_t pi = 0; pi < c.policies.size(); ++pi) {
    times.start("load");
    LoadedPolicy policy = load_chat_policy(c.policies[pi]);
    const ChatTemplate chat(policy.tokenizer);
    for (size_t ti = 0; ti < c.temperatures.size(); ++ti) {
      std::vector<int> samples_here;
      for (int s = 0; s < c.k; ++s) {
        if (slots[s].first == pi && slots[s].second == ti) samples_here.push_back(s);
      }
      if (samples_here.empty()) continue;
      SamplingConfig sc;
      sc.temperature = c.temperatures[ti];
      sc.max_new_tokens = c.max_new_tokens;
      sc.weights = c.weights;
      const Json sampling = {{"temperature", sc.temperature}, {"max_new_tokens", sc.max_new_tokens}};
      // Each batch holds whole items: an item's samples share one pass over
      // its prompt (generate_samples), the rows item-major as before.
      const size_t k_here = samples_here.size();
      const size_t items_per_batch = std::max<size_t>(1, static_cast<size_t>(c.batch_size) / k_here);
      for (size_t i0 = 0; i0 < items.size(); i0 += items_per_batch) {
        const size_t i1 = std::min(items.size(), i0 + items_per_batch);
        std::vector<std::vector<int32_t>> prompts;
        std::vector<uint64_t> seeds;
        for (size_t i = i0; i < i1; ++i) {
          prompts.push_back(chat.render_prompt(items[i].conv));
          for (int s : samples_here) {
            seeds.push_back(mix_seed({static_cast<uint64_t>(c.seed), static_cast<uint64_t>(items[i].prompt_id),
                                      static_cast<uint64_t>(s)}));
          }
        }
        times.start("generation");
        Generation g = generate_samples(policy.model, prompts, static_cast<int64_t>(k_here), sc, chat.stop_tokens(),
                                        chat.pad_id(), seeds);
        times.start("store");
        const std::vector<ChatReply> replies = decode_replies(chat, g.tokens, g.lengths, g.finished);
        for (size_t r = 0; r < replies.size(); ++r) {
          const ChatReply& reply = replies[r];
          Item& item = items[i0 + r / k_here];
          const int64_t id = store.add_candidate(item.prompt_id, reply.text, reply.finished, policy.dir, sampling);
          if (std::find(item.candidates.begin(), item.candidates.end(), id) == item.candidates.end()) {
            item.candidates.push_back(id);
            ++result.candidates;
          }
        }
        log_info("candidates: ", i1 * k_here, "/", items.size() * k_here, " replies from ", policy.dir,
                 " at temperature ", sc.temperature, " | ", times.summary());
      }
    }
  }
  for (Item& item : items) {
    std::vector<int64_t>& ids = item.candidates;
    std::sort(ids.begin(), ids.end());
    if (ids.size() < 2) continue;  // every sample was the same reply
    std::vector<std::vector<int64_t>> tasks;
    if (c.pairs == "ranking") {
      tasks.push_back(ids);
    } else {
      for (size_t a = 0; a < ids.size(); ++a) {
        for (size_t b = a + 1; b < ids.size(); ++b) {
          if (c.pairs == "all" || b == a + 1) tasks.push_back({ids[a], ids[b]});
        }
      }
    }
    for (const auto& t : tasks) result.comparisons += store.add_comparison(item.prompt_id, t, c.required_raters).has_value();
  }
  times.stop();
  result.times = times.metrics();
  return result;
}

std::vector<double> gold_scores(LabelStore& store, const Comparison& c) {
  const Prompt p = store.prompt(c.prompt_id);
  std::vector<std::string> customer;
  for (const auto& m : p.messages) {
    if (m.value("role", "") == "user") customer.push_back(m.value("content", ""));
  }
  const support::CaseFacts facts =
      p.metadata.is_object() ? support::facts_from_metadata(p.metadata) : support::infer_facts(customer);
  std::vector<double> gold;
  for (int64_t id : c.candidates) {
    const Candidate cand = store.candidate(id);
    gold.push_back(support::gold_score(facts, cand.text, cand.finished).total);
  }
  return gold;
}

size_t mark_gold_items(LabelStore& store, size_t count, double min_gap) {
  size_t marked = 0;
  for (const Comparison& c : store.comparisons()) {
    if (marked >= count) break;
    if (c.is_gold || c.is_ranking()) continue;
    const std::vector<double> g = gold_scores(store, c);
    if (std::abs(g[0] - g[1]) < min_gap) continue;
    store.set_gold(c.id, Json{{"choice", g[0] > g[1] ? "a" : "b"}});
    ++marked;
  }
  return marked;
}

int64_t simulated_rater_id(LabelStore& store, const std::string& rater_name) {
  if (auto r = store.rater_by_name(rater_name)) return r->id;
  return store.add_rater(rater_name, "", "simulated");
}

int64_t label_simulated(LabelStore& store, int64_t rater_id, const Comparison& c, const SimulatedRaterConfig& config) {
  const std::vector<double> gold = gold_scores(store, c);
  Label l;
  l.comparison_id = c.id;
  l.rater_id = rater_id;
  const uint64_t item = mix_seed({static_cast<uint64_t>(c.id)});
  // The order the simulated rater "saw": randomised, as for people.
  l.shown_order = c.candidates;
  if (SplitMix(mix_seed({item, static_cast<uint64_t>(config.seed)})).uniform() < 0.5) {
    std::reverse(l.shown_order.begin(), l.shown_order.end());
  }
  if (c.is_ranking()) {
    l.choice = Choice::kRanking;
    l.ranking = simulated_ranking(gold, config, item);
  } else {
    const Judgement j = simulated_judgement(gold[0], gold[1], config, item);
    l.choice = j == Judgement::kFirst ? Choice::kA : j == Judgement::kSecond ? Choice::kB : Choice::kTie;
  }
  return store.add_label(l);
}

SimulatedLabelResult label_simulated(LabelStore& store, const std::string& rater_name,
                                     const SimulatedRaterConfig& config, size_t limit) {
  const int64_t rater = simulated_rater_id(store, rater_name);
  SimulatedLabelResult result;
  for (const Comparison& c : store.open_comparisons_for(rater, limit)) {
    label_simulated(store, rater, c, config);
    ++result.labelled;
  }
  return result;
}

std::vector<PreferencePair> store_preferences(LabelStore& store, int64_t since_label_id, int64_t* last_label_id) {
  int64_t last = since_label_id;
  for (const Label& l : store.labels()) last = std::max(last, l.id);
  if (last_label_id != nullptr) *last_label_id = last;
  return preference_pairs(store.export_records(since_label_id), store.path());
}

}  // namespace rlhf::labels

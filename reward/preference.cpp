#include "reward/preference.h"

#include <unordered_map>

#include "common/error.h"
#include "common/hash.h"
#include "common/jsonl.h"

namespace rlhf {
namespace {

std::string text_of(const Json& r, const std::string& where, const char* field) {
  if (r.is_string()) return r.get<std::string>();
  if (r.is_array() && !r.empty() && r.back().is_object() && r.back().contains("content") &&
      r.back()["content"].is_string()) {
    return r.back()["content"].get<std::string>();
  }
  fail(ErrorKind::kData, where, ": \"", field, "\" must be a string (or a list of messages)");
}

}  // namespace

std::vector<PreferencePair> preference_pairs(const std::vector<Json>& rows, const std::string& source,
                                             const std::vector<size_t>& lines) {
  std::vector<PreferencePair> out;
  for (size_t i = 0; i < rows.size(); ++i) {
    const Json& row = rows[i];
    const size_t line = i < lines.size() ? lines[i] : i + 1;
    const std::string where = str_cat(source, ":", line);
    if (!row.contains("prompt")) fail(ErrorKind::kData, where, ": missing the field \"prompt\"");
    check_preference_record(row, source, line);
    Conversation prompt;
    if (row["prompt"].is_string()) {
      prompt = {{"user", row["prompt"].get<std::string>()}};
    } else {
      prompt = conversation_from_json(Json{{"messages", row["prompt"]}}, source, line, false);
    }
    const Json metadata = row.value("metadata", Json());
    if (row.contains("responses")) {
      const Json& responses = row["responses"];
      const Json& ranking = row.value("ranking", Json());
      if (!responses.is_array() || responses.size() < 2 || !ranking.is_array() || ranking.size() != responses.size()) {
        fail(ErrorKind::kData, where, ": a ranking needs \"responses\" (2 or more) and one rank per response in \"ranking\"");
      }
      const size_t k = responses.size();
      const std::vector<bool> finished = preference_finished_flags(row, source, line);
      const double w = 2.0 / static_cast<double>(k * (k - 1));
      for (size_t a = 0; a < k; ++a) {
        for (size_t b = a + 1; b < k; ++b) {
          if (!ranking[a].is_number_integer() || !ranking[b].is_number_integer()) {
            fail(ErrorKind::kData, where, ": ranks must be integers (1 = best)");
          }
          const int ra = ranking[a].get<int>(), rb = ranking[b].get<int>();
          PreferencePair p;
          p.prompt = prompt;
          p.chosen = text_of(responses[ra <= rb ? a : b], where, "responses");
          p.rejected = text_of(responses[ra <= rb ? b : a], where, "responses");
          p.chosen_finished = finished[ra <= rb ? a : b];
          p.rejected_finished = finished[ra <= rb ? b : a];
          p.tie = ra == rb;
          p.weight = w;
          p.metadata = metadata;
          p.group = static_cast<int64_t>(i);
          out.push_back(std::move(p));
        }
      }
    } else {
      if (!row.contains("chosen") || !row.contains("rejected")) {
        fail(ErrorKind::kData, where, ": expected \"chosen\" and \"rejected\", or \"responses\" and \"ranking\"");
      }
      PreferencePair p;
      p.prompt = prompt;
      p.chosen = text_of(row["chosen"], where, "chosen");
      p.rejected = text_of(row["rejected"], where, "rejected");
      const std::vector<bool> finished = preference_finished_flags(row, source, line);
      p.chosen_finished = finished[0];
      p.rejected_finished = finished[1];
      if (row.contains("tie")) {
        if (!row["tie"].is_boolean()) fail(ErrorKind::kData, where, ": \"tie\" must be true or false");
        p.tie = row["tie"].get<bool>();
      }
      if (row.contains("margin")) {
        if (!row["margin"].is_number()) fail(ErrorKind::kData, where, ": \"margin\" must be a number");
        p.margin = row["margin"].get<double>();
      }
      p.metadata = metadata;
      p.group = static_cast<int64_t>(i);
      out.push_back(std::move(p));
    }
  }
  return out;
}

std::vector<PreferencePair> load_preference_jsonl(const std::string& path) {
  std::vector<Json> rows;
  std::vector<size_t> lines;
  read_jsonl(path, [&](const Json& row, size_t line) {
    rows.push_back(row);
    lines.push_back(line);
  });
  if (rows.empty()) fail(ErrorKind::kData, path, ": no preference records");
  return preference_pairs(rows, path, lines);
}

std::vector<std::vector<size_t>> group_by_prompt(const std::vector<PreferencePair>& pairs) {
  std::vector<std::vector<size_t>> groups;
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < pairs.size(); ++i) {
    const auto [it, added] = index.emplace(conversation_to_json(pairs[i].prompt).dump(), groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  return groups;
}

PairSelection parse_pair_selection(const std::string& name) {
  if (name == "all") return PairSelection::kAll;
  if (name == "best_vs_worst") return PairSelection::kBestVsWorst;
  if (name == "best_vs_rest") return PairSelection::kBestVsRest;
  fail(ErrorKind::kConfig, "pair selection (data.pairs) '", name, "' is not one of all, best_vs_worst, best_vs_rest");
}

namespace {

struct RatedReply {
  const std::string* text = nullptr;
  bool finished = true;
  double wins = 0, weight = 0;  // weighted wins (ties half) and weighted comparisons
  double rate() const { return weight > 0 ? wins / weight : 0.5; }
};

// The distinct replies of one prompt's pairs with their win rates, in order
// of first appearance.
std::vector<RatedReply> rate_replies(const std::vector<PreferencePair>& pairs, const std::vector<size_t>& group) {
  std::vector<RatedReply> replies;
  std::unordered_map<std::string, size_t> index;
  auto find = [&](const std::string& text, bool finished) {
    const auto [it, added] = index.emplace(text + (finished ? "\x01" : "\x02"), replies.size());
    if (added) replies.push_back({&text, finished});
    return it->second;
  };
  for (size_t i : group) {
    const PreferencePair& p = pairs[i];
    const size_t a = find(p.chosen, p.chosen_finished);
    const size_t b = find(p.rejected, p.rejected_finished);
    if (a == b) continue;  // a reply against itself says nothing
    replies[a].weight += p.weight;
    replies[b].weight += p.weight;
    replies[a].wins += p.tie ? 0.5 * p.weight : p.weight;
    replies[b].wins += p.tie ? 0.5 * p.weight : 0.0;
  }
  return replies;
}

}  // namespace

std::vector<PreferencePair> select_pairs(const std::vector<PreferencePair>& pairs, PairSelection selection) {
  if (selection == PairSelection::kAll) return pairs;
  std::vector<PreferencePair> out;
  for (const std::vector<size_t>& group : group_by_prompt(pairs)) {
    const std::vector<RatedReply> replies = rate_replies(pairs, group);
    size_t best = 0, worst = 0;
    for (size_t r = 1; r < replies.size(); ++r) {
      if (replies[r].rate() > replies[best].rate()) best = r;
      if (replies[r].rate() < replies[worst].rate()) worst = r;
    }
    if (replies.size() < 2 || replies[best].rate() <= replies[worst].rate()) continue;
    const PreferencePair& first = pairs[group.front()];
    auto pair_with = [&](const RatedReply& loser, double weight) {
      PreferencePair p;
      p.prompt = first.prompt;
      p.metadata = first.metadata;
      p.group = first.group;
      p.chosen = *replies[best].text;
      p.chosen_finished = replies[best].finished;
      p.rejected = *loser.text;
      p.rejected_finished = loser.finished;
      p.weight = weight;
      out.push_back(std::move(p));
    };
    if (selection == PairSelection::kBestVsWorst) {
      pair_with(replies[worst], 1.0);
      continue;
    }
    const double weight = 1.0 / static_cast<double>(replies.size() - 1);
    for (const RatedReply& r : replies) {
      if (r.rate() < replies[best].rate()) pair_with(r, weight);
    }
  }
  return out;
}

bool held_out_prompt(const Conversation& prompt, double fraction, uint64_t seed) {
  const uint64_t h = mix_seed({seed, fnv1a64(conversation_to_json(prompt).dump())});
  return static_cast<double>(h % 1000000) / 1e6 < fraction;
}

std::pair<std::vector<PreferencePair>, std::vector<PreferencePair>> split_by_prompt(
    std::vector<PreferencePair> pairs, double fraction, uint64_t seed) {
  std::pair<std::vector<PreferencePair>, std::vector<PreferencePair>> out;
  for (auto& p : pairs) (held_out_prompt(p.prompt, fraction, seed) ? out.second : out.first).push_back(std::move(p));
  return out;
}

}  // namespace rlhf

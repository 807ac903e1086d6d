#include "labels/active.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "labels/feedback.h"
#include "policy/checkpoint.h"
#include "reward/reward_model.h"
#include "train/runtime.h"
#include "train/training_run.h"

namespace rlhf::labels {
namespace {

constexpr int64_t kBadgeDim = 64;  // badge's gradient embeddings are projected to at most this many dimensions

bool needs_reward_model(SelectionStrategy s) {
  return s == SelectionStrategy::kUncertainty || s == SelectionStrategy::kDisagreement ||
         s == SelectionStrategy::kGradient || s == SelectionStrategy::kBadge;
}

bool needs_features(SelectionStrategy s) { return s == SelectionStrategy::kGradient || s == SelectionStrategy::kBadge; }

Conversation prompt_conversation(LabelStore& store, int64_t prompt_id) {
  return prompt_from_json(Json{{"messages", store.prompt(prompt_id).messages}}, store.path(), 0, "");
}

// What one reward model says about candidates, one row per candidate
// (row_of[id]): raw scores (Bradley-Terry units) and, when asked for, the
// score head's inputs.
struct CandidateView {
  std::map<int64_t, int64_t> row_of;
  std::vector<double> scores;
  torch::Tensor features;  // [N, C] float, or undefined
  double score(int64_t id) const { return scores[static_cast<size_t>(row_of.at(id))]; }
};

CandidateView score_candidates(LabelStore& store, const std::string& reward_model, const std::vector<int64_t>& ids,
                               int batch_size, torch::Device device, bool with_features = false) {
  LoadedRewardModel rm = load_reward_model(reward_model, device);
  const ChatTemplate chat(rm.tokenizer);
  std::map<int64_t, Conversation> prompts;
  std::vector<Candidate> candidates;
  candidates.reserve(ids.size());
  for (int64_t id : ids) {
    candidates.push_back(store.candidate(id));
    const int64_t p = candidates.back().prompt_id;
    if (!prompts.count(p)) prompts.emplace(p, prompt_conversation(store, p));
  }
  // One prompt's replies side by side, so that its tokens run once for all
  // of them (score_replies shares them); within a prompt, similar lengths
  // share a batch: less padding.
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const Candidate& x = candidates[a];
    const Candidate& y = candidates[b];
    return std::make_tuple(x.prompt_id, x.text.size(), x.id) < std::make_tuple(y.prompt_id, y.text.size(), y.id);
  });
  std::vector<const Conversation*> conv;
  std::vector<const std::string*> text;
  std::vector<bool> finished;
  for (size_t i : order) {
    conv.push_back(&prompts.at(candidates[i].prompt_id));
    text.push_back(&candidates[i].text);
    finished.push_back(candidates[i].finished);
  }
  CandidateView view;
  view.scores = score_replies(rm.model, chat, conv, text, batch_size, device, finished, /*share_prompts=*/true,
                              with_features ? &view.features : nullptr);
  for (size_t k = 0; k < order.size(); ++k) view.row_of[candidates[order[k]].id] = static_cast<int64_t>(k);
  if (with_features) view.features = view.features.to(torch::kFloat).contiguous();
  return view;
}

// |h(a) - h(b)| between two candidates' score-head inputs.
double feature_distance(const CandidateView& view, int64_t a, int64_t b) {
  const int64_t C = view.features.size(1);
  const float* x = view.features.data_ptr<float>() + view.row_of.at(a) * C;
  const float* y = view.features.data_ptr<float>() + view.row_of.at(b) * C;
  double sum = 0;
  for (int64_t k = 0; k < C; ++k) sum += static_cast<double>(x[k] - y[k]) * (x[k] - y[k]);
  return std::sqrt(sum);
}

// The pair a comparison's signals describe, as (a, b): the pair itself, or
// for a ranking its two replies whose scores are closest (its hardest pair).
std::pair<int64_t, int64_t> signal_pair(const Comparison& c, const CandidateView& view) {
  std::pair<int64_t, int64_t> best{c.candidates[0], c.candidates[1]};
  if (!c.is_ranking()) return best;
  double gap_best = 1e300;
  for (size_t i = 0; i < c.candidates.size(); ++i) {
    for (size_t j = i + 1; j < c.candidates.size(); ++j) {
      const double gap = std::abs(view.score(c.candidates[i]) - view.score(c.candidates[j]));
      if (gap < gap_best) gap_best = gap, best = {c.candidates[i], c.candidates[j]};
    }
  }
  return best;
}

// Adds one reward model's view of a comparison to its signals: r(a) - r(b)
// for its signal pair (for a ranking, the gap without sign); with features,
// the distance between that pair's replies.
void add_signals(const Comparison& c, const CandidateView& view, ComparisonSignals& signals) {
  const auto [a, b] = signal_pair(c, view);
  const double margin = view.score(a) - view.score(b);
  signals.margins.push_back(c.is_ranking() ? std::abs(margin) : margin);
  if (view.features.defined()) signals.feature_distances.push_back(feature_distance(view, a, b));
}

// BADGE's gradient embedding of each comparison's signal pair: the
// Bradley-Terry loss's gradient with respect to the score head's weights,
// were the pair labelled as the model predicts: (1 - q) (h_w - h_l), with w
// the predicted winner and q its probability. (It does not depend on which
// reply is listed first.) The features are first projected to at most
// `dim` dimensions by a fixed random matrix of +-1/sqrt(dim), which keeps
// distances (Johnson-Lindenstrauss) at a fraction of the memory and time.
// Rows of min(C, dim) values, one per comparison.
std::vector<float> gradient_embeddings(const std::vector<Comparison>& open, const CandidateView& view, int64_t dim,
                                       uint64_t seed) {
  const int64_t C = view.features.size(1);
  torch::Tensor h = view.features;
  if (C > dim) {
    std::vector<float> signs(static_cast<size_t>(C * dim));
    SplitMix rng(seed);
    const float scale = 1.0f / std::sqrt(static_cast<float>(dim));
    for (float& v : signs) v = (rng.next() >> 63) ? scale : -scale;
    h = torch::matmul(h, torch::from_blob(signs.data(), {C, dim}, torch::kFloat)).contiguous();
  }
  const int64_t D = h.size(1);
  const float* rows = h.data_ptr<float>();
  std::vector<float> out(open.size() * static_cast<size_t>(D));
  for (size_t i = 0; i < open.size(); ++i) {
    auto [w, l] = signal_pair(open[i], view);
    if (view.score(w) < view.score(l)) std::swap(w, l);
    const double q = 1.0 / (1.0 + std::exp(-(view.score(w) - view.score(l))));
    const float* x = rows + view.row_of.at(w) * D;
    const float* y = rows + view.row_of.at(l) * D;
    float* g = out.data() + i * static_cast<size_t>(D);
    for (int64_t d = 0; d < D; ++d) g[d] = static_cast<float>((1.0 - q) * (x[d] - y[d]));
  }
  return out;
}

bool mixed_sources(LabelStore& store, const Comparison& c) {
  std::set<std::string> sources;
  for (int64_t id : c.candidates) {
    const Candidate cand = store.candidate(id);
    sources.insert(cand.policy + "\n" + (cand.sampling.is_null() ? std::string() : cand.sampling.dump()));
  }
  return sources.size() > 1;
}

std::string format_percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", 100 * x);
  return buf;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Badge orders its batch by its own spread; spreading over prompts would reorder it.
void check_spread(SelectionStrategy strategy, bool spread_prompts) {
  if (strategy == SelectionStrategy::kBadge && spread_prompts) {
    fail(ErrorKind::kConfig, "spread_prompts = true does not apply to strategy = \"badge\" (k-means++ already spreads "
         "its batch): set spread_prompts = false");
  }
}

bool finished_run(const std::string& dir) {
  const std::optional<std::string> latest = latest_checkpoint(dir);
  return latest && TrainerState::read(*latest).finished;
}

}  // namespace

SelectionStrategy checked_strategy(const std::string& strategy, size_t reward_models, const std::string& field) {
  const SelectionStrategy s = parse_selection_strategy(strategy, field);
  if (s == SelectionStrategy::kDisagreement && reward_models < 2) {
    fail(ErrorKind::kConfig, field, " = \"disagreement\" needs two or more reward models (an ensemble); got ",
         reward_models, ": list them in reward_models, or set ensemble = 2 in the loop");
  }
  if (needs_reward_model(s) && reward_models < 1) {
    fail(ErrorKind::kConfig, field, " = \"", strategy,
         "\" needs a reward model: set reward_models (or --reward_models)");
  }
  return s;
}

SelectResult select_open_comparisons(LabelStore& store, const SelectConfig& config,
                                     const std::vector<int64_t>& skip_prompts) {
  const SelectionStrategy strategy = checked_strategy(config.strategy, config.reward_models.size(), "strategy");
  check_spread(strategy, config.spread_prompts);
  const std::set<int64_t> skip(skip_prompts.begin(), skip_prompts.end());
  std::vector<Comparison> open;
  for (Comparison& c : store.open_comparisons()) {
    if (!skip.count(c.prompt_id)) open.push_back(std::move(c));
  }
  SelectResult result;
  std::vector<ComparisonSignals> signals(open.size());
  std::vector<float> embeddings;  // badge: one row per open comparison
  if (needs_reward_model(strategy)) {
    set_torch_threads(config.threads);
    std::set<int64_t> ids;
    for (const Comparison& c : open) ids.insert(c.candidates.begin(), c.candidates.end());
    const std::vector<int64_t> id_list(ids.begin(), ids.end());
    for (size_t m = 0; m < config.reward_models.size(); ++m) {
      const CandidateView view = score_candidates(store, config.reward_models[m], id_list, config.batch_size,
                                                  parse_device(config.device), needs_features(strategy));
      for (size_t i = 0; i < open.size(); ++i) add_signals(open[i], view, signals[i]);
      if (m == 0 && strategy == SelectionStrategy::kBadge) {
        embeddings = gradient_embeddings(open, view, kBadgeDim, mix_seed({static_cast<uint64_t>(config.seed), 0x9e0}));
      }
      result.replies_scored += id_list.size();
    }
  }
  if (strategy == SelectionStrategy::kDiversity) {
    for (size_t i = 0; i < open.size(); ++i) signals[i].mixed_sources = mixed_sources(store, open[i]);
  }
  std::vector<double> scores(open.size());
  for (size_t i = 0; i < open.size(); ++i) scores[i] = selection_score(strategy, signals[i]);
  std::vector<int64_t> groups;
  if (config.spread_prompts) {
    for (const Comparison& c : open) groups.push_back(c.prompt_id);
  }
  // The order's key is the score, except that badge's batch comes first,
  // in k-means++ order (its slots are the batch's positions not taken by
  // the random floor).
  std::vector<double> keys = scores;
  if (strategy == SelectionStrategy::kBadge && !open.empty()) {
    const size_t batch = std::min(static_cast<size_t>(config.batch), open.size());
    const size_t floor_picks = static_cast<size_t>(std::floor(static_cast<double>(batch) * config.random_floor + 1e-9));
    const std::vector<size_t> chosen = kmeans_pp_picks(embeddings, embeddings.size() / open.size(), batch - floor_picks,
                                                       mix_seed({static_cast<uint64_t>(config.seed), 0xba7c}));
    const double top = 1.0 + *std::max_element(scores.begin(), scores.end());
    for (size_t j = 0; j < chosen.size(); ++j) keys[chosen[j]] = top + static_cast<double>(chosen.size() - j);
  }
  const std::vector<SelectionPick> picks =
      order_for_labelling(keys, config.random_floor, static_cast<uint64_t>(config.seed), groups);
  std::vector<SelectionMark> marks;
  marks.reserve(picks.size());
  for (size_t pos = 0; pos < picks.size(); ++pos) {
    const SelectionPick& p = picks[pos];
    const bool random = p.random_floor || strategy == SelectionStrategy::kRandom;
    marks.push_back({open[p.index].id, static_cast<double>(picks.size() - pos), random ? "random" : config.strategy,
                     scores[p.index]});
    result.order.push_back(open[p.index].id);
    result.random_picks += random;
  }
  store.set_selection(marks);
  result.comparisons = open.size();
  return result;
}

void validate_active_config(const ActiveLoopConfig& c) {
  check_spread(checked_strategy(c.strategy, static_cast<size_t>(c.ensemble), "strategy"), c.spread_prompts);
  if (c.train_on != "new" && c.train_on != "all" && c.train_on != "replay") {
    fail(ErrorKind::kConfig, "train_on = '", c.train_on,
         "': use \"new\" (continue the last reward model on the new labels), \"all\" (train afresh on every "
         "label) or \"replay\" (continue the last reward model on every label)");
  }
  if (c.budgets.empty()) fail(ErrorKind::kConfig, "budgets: list the label counts after each round, e.g. [1000, 2000]");
  for (size_t i = 0; i < c.budgets.size(); ++i) {
    if (c.budgets[i] <= (i == 0 ? 0 : c.budgets[i - 1])) {
      fail(ErrorKind::kConfig, "budgets must be positive and increasing; entry ", i + 1, " is ", c.budgets[i]);
    }
  }
}

Json CurvePoint::to_json() const {
  return Json{{"labels", labels},         {"gold_accuracy", gold_accuracy}, {"gold_pairs", gold_pairs},
              {"seconds", seconds},       {"reward_models", reward_models}, {"last_label_id", last_label_id}};
}

std::vector<CurvePoint> run_active_labelling(const ActiveLoopConfig& c) {
  validate_active_config(c);
  if (!path_exists(c.db)) fail(ErrorKind::kIo, "label store '", c.db, "' does not exist: queue comparisons with rlhf candidates");
  make_dirs(c.out_dir);
  LabelStore store(c.db);
  const int64_t rater = simulated_rater_id(store, c.rater);
  const torch::Device device = parse_device(c.rm.train.device);

  // Held-out prompts: never labelled; every pair of theirs whose gold
  // scores differ measures the reward model.
  const uint64_t split_seed = static_cast<uint64_t>(c.rm.train.seed);
  std::vector<int64_t> held;
  std::map<int64_t, bool> is_held;
  struct EvalPair {
    int64_t better, worse;
  };
  std::vector<EvalPair> eval;
  std::set<int64_t> eval_ids;
  for (const Comparison& cmp : store.comparisons()) {
    if (!is_held.count(cmp.prompt_id)) {
      const bool h = held_out_prompt(prompt_conversation(store, cmp.prompt_id), c.eval_fraction, split_seed);
      is_held[cmp.prompt_id] = h;
      if (h) held.push_back(cmp.prompt_id);
    }
    if (!is_held[cmp.prompt_id] || cmp.is_ranking() || cmp.is_gold) continue;
    const std::vector<double> g = gold_scores(store, cmp);
    if (g[0] == g[1]) continue;
    eval.push_back(g[0] > g[1] ? EvalPair{cmp.candidates[0], cmp.candidates[1]} : EvalPair{cmp.candidates[1], cmp.candidates[0]});
    eval_ids.insert(cmp.candidates.begin(), cmp.candidates.end());
  }
  if (eval.empty()) fail(ErrorKind::kData, c.db, ": no held-out pairs with a gold answer (raise eval_fraction)");
  log_info("active: ", held.size(), " held-out prompts with ", eval.size(), " gold pairs; strategy ", c.strategy,
           c.spread_prompts ? " spread over prompts" : "", ", random floor ", c.random_floor);

  const std::string curve_path = join_path(c.out_dir, "curve.json");
  std::vector<CurvePoint> points;
  if (path_exists(curve_path)) {
    const Json saved = read_json_file(curve_path);
    if (saved.value("strategy", "") != c.strategy || saved.value("db", "") != c.db ||
        saved.value("train_on", "new") != c.train_on || saved.value("spread_prompts", false) != c.spread_prompts) {
      fail(ErrorKind::kConfig, curve_path, " is from another run (strategy ", saved.value("strategy", ""), ", store ",
           saved.value("db", ""), ", train_on ", saved.value("train_on", "new"), ", spread_prompts ",
           saved.value("spread_prompts", false), "): use a new out_dir");
    }
    for (const Json& p : saved.at("points")) {
      CurvePoint pt;
      pt.labels = p.at("labels").get<int64_t>();
      pt.gold_accuracy = p.at("gold_accuracy").get<double>();
      pt.gold_pairs = p.at("gold_pairs").get<size_t>();
      pt.seconds = p.at("seconds").get<double>();
      pt.reward_models = p.at("reward_models").get<std::vector<std::string>>();
      pt.last_label_id = p.at("last_label_id").get<int64_t>();
      points.push_back(pt);
    }
  }

  for (size_t round = points.size(); round < c.budgets.size(); ++round) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<std::string> members = round == 0 ? std::vector<std::string>{} : points.back().reward_models;
    // Where this round's reward models start, and which labels they see.
    const bool afresh = round == 0 || c.train_on == "all";
    const int64_t since = round > 0 && c.train_on == "new" ? points.back().last_label_id : 0;

    // 1. Label up to this round's budget: the first round at random, then
    //    by the strategy on the last round's reward models.
    const int64_t have = static_cast<int64_t>(store.rater_counts(rater).labels);
    if (have < c.budgets[round]) {
      SelectConfig sc;
      sc.db = c.db;
      sc.strategy = round == 0 ? "random" : c.strategy;
      sc.reward_models = members;
      sc.random_floor = c.random_floor;
      sc.spread_prompts = round > 0 && c.spread_prompts;  // the first round is the same for every strategy
      sc.seed = static_cast<int64_t>(mix_seed({static_cast<uint64_t>(c.seed), round}));
      sc.batch = std::max<int64_t>(1, c.budgets[round] - have);
      sc.batch_size = c.scoring_batch;
      sc.threads = c.rm.train.threads;
      sc.device = c.rm.train.device;
      const SelectResult sel = select_open_comparisons(store, sc, held);
      const size_t want = static_cast<size_t>(c.budgets[round] - have);
      if (sel.order.size() < want) {
        fail(ErrorKind::kData, c.db, ": only ", have + static_cast<int64_t>(sel.order.size()),
             " comparisons can be labelled, fewer than the budget ", c.budgets[round],
             ": queue more (rlhf candidates) or lower budgets");
      }
      for (size_t i = 0; i < want; ++i) label_simulated(store, rater, store.comparison(sel.order[i]), c.simulated);
      log_info("active: round ", round + 1, ": labelled ", want, " by ", sc.strategy, " (", sel.random_picks,
               " of the ", sel.comparisons, " ordered are random picks)");
    }

    // 2. Continue each reward model on the labels added since the last round
    //    ("new") or on all of them ("replay"), or train it afresh on all of
    //    them ("all").
    CurvePoint point;
    const std::vector<PreferencePair> pairs = store_preferences(store, since, &point.last_label_id);
    for (int m = 0; m < c.ensemble; ++m) {
      RewardTrainConfig r = c.rm;
      r.out_dir = join_path(c.out_dir, str_cat("round", round + 1, "-rm", m + 1));
      r.init_from = afresh ? c.rm.init_from : members[m];
      r.train.seed = c.rm.train.seed + m;
      if (!finished_run(r.out_dir)) run_reward_training(r, pairs, {}, point.last_label_id);
      point.reward_models.push_back(r.out_dir);
    }

    // 3. Measure the first member on the held-out pairs.
    const CandidateView view = score_candidates(store, point.reward_models[0],
                                                std::vector<int64_t>(eval_ids.begin(), eval_ids.end()),
                                                c.scoring_batch, device);
    size_t right = 0;
    for (const EvalPair& e : eval) right += view.score(e.better) > view.score(e.worse);
    point.labels = static_cast<int64_t>(store.rater_counts(rater).labels);
    point.gold_pairs = eval.size();
    point.gold_accuracy = static_cast<double>(right) / static_cast<double>(eval.size());
    point.seconds = seconds_since(start);
    points.push_back(point);
    log_info("active: ", point.labels, " labels: reward model ", 100 * point.gold_accuracy, "% vs gold on ",
             point.gold_pairs, " held-out pairs (round ", point.seconds, " s)");
    Json saved = {{"strategy", c.strategy}, {"db", c.db}, {"random_floor", c.random_floor},
                  {"spread_prompts", c.spread_prompts}, {"train_on", c.train_on}, {"points", Json::array()}};
    for (const CurvePoint& p : points) saved["points"].push_back(p.to_json());
    write_file_atomic(curve_path, saved.dump(2) + "\n");
  }
  return points;
}

size_t label_held_out(LabelStore& store, const ActiveLoopConfig& c) {
  const int64_t rater = simulated_rater_id(store, c.rater);
  std::map<int64_t, bool> held;
  size_t labelled = 0;
  for (const Comparison& cmp : store.open_comparisons()) {
    auto it = held.find(cmp.prompt_id);
    if (it == held.end()) {
      it = held.emplace(cmp.prompt_id, held_out_prompt(prompt_conversation(store, cmp.prompt_id), c.eval_fraction,
                                                       static_cast<uint64_t>(c.rm.train.seed)))
               .first;
    }
    if (!it->second) continue;
    label_simulated(store, rater, cmp, c.simulated);
    ++labelled;
  }
  return labelled;
}

std::string curve_table(const std::vector<std::string>& out_dirs) {
  if (out_dirs.empty()) fail(ErrorKind::kUsage, "name one or more folders of `rlhf active` runs");
  struct Run {
    std::string name;
    std::map<int64_t, double> accuracy;
    size_t pairs = 0;
  };
  std::vector<Run> runs;
  std::set<int64_t> budgets;
  for (const std::string& dir : out_dirs) {
    const std::string path = join_path(dir, "curve.json");
    if (!path_exists(path)) fail(ErrorKind::kIo, path, " does not exist: run `rlhf active --out_dir=", dir, "` first");
    const Json j = read_json_file(path);
    Run r;
    r.name = j.value("strategy", dir) + (j.value("spread_prompts", false) ? " (spread)" : "");
    for (const Json& p : j.at("points")) {
      r.accuracy[p.at("labels").get<int64_t>()] = p.at("gold_accuracy").get<double>();
      r.pairs = p.at("gold_pairs").get<size_t>();
      budgets.insert(p.at("labels").get<int64_t>());
    }
    runs.push_back(std::move(r));
  }
  std::string out = "| labels |";
  for (const Run& r : runs) out += " " + r.name + " |";
  out += "\n|---:|";
  for (size_t i = 0; i < runs.size(); ++i) out += "---:|";
  out += "\n";
  for (int64_t b : budgets) {
    out += "| " + std::to_string(b) + " |";
    for (const Run& r : runs) {
      const auto it = r.accuracy.find(b);
      out += it == r.accuracy.end() ? std::string(" |") : str_cat(" ", format_percent(it->second), " |");
    }
    out += "\n";
  }
  const Run& base = runs.front();
  if (!base.accuracy.empty()) {
    const auto [base_labels, target] = *base.accuracy.rbegin();
    out += str_cat("\nLabels needed to reach ", base.name, "'s accuracy at ", base_labels, " labels (",
                   format_percent(target), ", ", base.pairs, " held-out pairs):");
    for (const Run& r : runs) {
      const auto it = std::find_if(r.accuracy.begin(), r.accuracy.end(), [&](const auto& p) { return p.second >= target; });
      out += str_cat(" ", r.name, " ", it == r.accuracy.end() ? std::string("not reached") : std::to_string(it->first), ";");
    }
    out.back() = '\n';
  }
  return out;
}

}  // namespace rlhf::labels

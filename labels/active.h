// Active labelling: order the open comparisons by what the reward model(s)
// make of them (`rlhf select`), and a loop that alternates labelling a batch,
// continuing the reward model on the new labels and re-ordering the rest
// (`rlhf active`). The loop runs with the simulated rater, to measure label
// budgets; with people, the label service serves comparisons in the order
// `rlhf select` leaves in the store, so re-running it after each reward model
// update re-ranks their queue.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/config.h"
#include "labels/selection.h"
#include "labels/store.h"
#include "reward/rm_train.h"
#include "reward/simulated_rater.h"

namespace rlhf::labels {

struct SelectConfig {
  std::string db = "runs/labels.sqlite";               // the label store whose open comparisons are ordered
  std::string strategy = "uncertainty";                // random, uncertainty, gradient, badge, disagreement or diversity
  std::vector<std::string> reward_models = {"runs/rm"};  // score the replies: 1 for uncertainty, gradient or badge, 2 or more for disagreement
  double random_floor = 0.1;                           // share of picks made uniformly at random, e.g. 0.1
  int64_t seed = 0;                                    // random picks and tie-breaks
  // Spread the picks by score over prompts: every prompt's best comparison
  // before any prompt's second (order_for_labelling's groups).
  bool spread_prompts = false;
  // badge: how many of the first picks are chosen together, spread by
  // k-means++ (the next batch people label); the rest follow by gradient length.
  int64_t batch = 1000;
  int batch_size = 32;                                 // replies per scoring batch
  int threads = 0;
  std::string device = "cpu";
  template <class V> void visit(V& v) {
    v("db", db);
    v("strategy", strategy);
    v("reward_models", reward_models);
    v("random_floor", random_floor, Range::between(0, 1));
    v("seed", seed);
    v("spread_prompts", spread_prompts);
    v("batch", batch, Range::at_least(1));
    v("batch_size", batch_size, Range::at_least(1));
    v("threads", threads, Range::at_least(0));
    v("device", device);
  }
};

// Fails (kConfig) when the strategy is unknown or lacks the reward models it needs.
SelectionStrategy checked_strategy(const std::string& strategy, size_t reward_models, const std::string& field);

struct SelectResult {
  size_t comparisons = 0;   // open comparisons ordered
  size_t random_picks = 0;  // of them, placed by the random floor
  size_t replies_scored = 0;
  std::vector<int64_t> order;  // comparison ids, first to label first
};
// Orders every open regular comparison (except those of `skip_prompts`) and
// stores the order (priority), strategy and score (LabelStore::set_selection).
SelectResult select_open_comparisons(LabelStore& store, const SelectConfig& config,
                                     const std::vector<int64_t>& skip_prompts = {});

struct ActiveLoopConfig {
  std::string db = "runs/labels.sqlite";  // a store with queued comparisons (rlhf candidates); labels are added to it
  std::string out_dir = "runs/active";    // one reward model per round, and curve.json
  std::string strategy = "uncertainty";   // random, uncertainty, gradient, badge, disagreement or diversity
  double random_floor = 0.1;              // share of each batch picked uniformly at random
  bool spread_prompts = false;            // each round's picks by score: every prompt's best before any prompt's second
  std::vector<int64_t> budgets = {1000, 2000, 4000, 8000, 16000};  // labels after each round (the first round is random)
  int ensemble = 1;                        // reward models trained per round with different seeds (disagreement needs 2+)
  double eval_fraction = 0.1;              // prompts held out of labelling: the reward model's gold accuracy is measured on all their pairs
  int64_t seed = 0;                        // selection draws (the first round's random batch is the same for every strategy)
  std::string rater = "simulated";         // the simulated rater's name in the store
  SimulatedRaterConfig simulated;          // its noise
  // What each round trains on: "replay" continues the last round's reward
  // model on every label so far, so a round's chosen (biased) batch cannot
  // pull the model away alone, at about twice the training time of "new"
  // over five doubling rounds; "new" continues it on the labels added since
  // the last round; "all" trains afresh from rm.init_from on every label so
  // far (the textbook protocol; weaker here than either, docs/results.md).
  std::string train_on = "replay";
  RewardTrainConfig rm;                    // the reward model's training (init_from: the first round's start)
  int scoring_batch = 32;                  // replies per scoring batch
  template <class V> void visit(V& v) {
    v("db", db);
    v("out_dir", out_dir);
    v("strategy", strategy);
    v("random_floor", random_floor, Range::between(0, 1));
    v("spread_prompts", spread_prompts);
    v("budgets", budgets);
    v("ensemble", ensemble, Range::at_least(1));
    v("eval_fraction", eval_fraction, Range::between(0.01, 0.9));
    v("seed", seed);
    v("rater", rater);
    v.section("simulated", simulated);
    v("train_on", train_on);
    v.section("rm", rm);
    v("scoring_batch", scoring_batch, Range::at_least(1));
  }
};

// Checks what can be checked before any model loads (strategy, budgets).
void validate_active_config(const ActiveLoopConfig& config);

struct CurvePoint {
  int64_t labels = 0;        // labels the reward model has been trained on
  double gold_accuracy = 0;  // on the held-out prompts' pairs whose gold scores differ
  size_t gold_pairs = 0;
  double seconds = 0;        // wall time of the round (selection, labelling, training, evaluation)
  std::vector<std::string> reward_models;  // the round's runs (the first is measured)
  int64_t last_label_id = 0;                // the newest label they were trained on
  Json to_json() const;
};
// Runs the rounds and returns one point per budget; resumable (a finished
// round is read back from out_dir/curve.json).
std::vector<CurvePoint> run_active_labelling(const ActiveLoopConfig& config);

// Labels, as the simulated rater, every open comparison of the prompts the
// loop holds out (those that measure a reward model); returns how many.
size_t label_held_out(LabelStore& store, const ActiveLoopConfig& config);

// A markdown table of the curves in these loop folders (their curve.json):
// gold accuracy by label count, one column per run, and for each run the
// fewest labels at which it reached the first run's final accuracy.
std::string curve_table(const std::vector<std::string>& out_dirs);

}  // namespace rlhf::labels

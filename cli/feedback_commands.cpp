// rlhf candidates | label | labels | rm
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "dpo/dpo.h"
#include "dpo/dpo_loss.h"
#include "policy/checkpoint.h"
#include "labels/active.h"
#include "labels/agreement.h"
#include "labels/feedback.h"
#include "labels/store.h"
#include "labels/user_feedback.h"
#include "labels/token.h"
#include "reward/rm_train.h"
#include "train/distributed.h"
#include "train/runtime.h"

namespace rlhf::cli {
namespace {

bool is_store(const std::string& path) {
  return path.size() > 7 && (path.compare(path.size() - 7, 7, ".sqlite") == 0 || path.compare(path.size() - 3, 3, ".db") == 0);
}

// Pairs from a label store or a JSONL file, split by prompt.
struct Pairs {
  std::vector<PreferencePair> train, eval;
  int64_t last_label_id = 0;
};
Pairs load_pairs(const std::string& path, double eval_fraction, int64_t since, uint64_t seed) {
  std::vector<PreferencePair> all;
  Pairs out;
  if (is_store(path)) {
    if (!path_exists(path)) fail(ErrorKind::kIo, "label store '", path, "' does not exist");
    labels::LabelStore store(path);
    all = labels::store_preferences(store, since, &out.last_label_id);
  } else {
    all = load_preference_jsonl(path);
  }
  if (all.empty()) fail(ErrorKind::kData, path, ": no labelled pairs", since > 0 ? str_cat(" after label ", since) : "");
  std::tie(out.train, out.eval) = split_by_prompt(std::move(all), eval_fraction, seed);
  return out;
}

}  // namespace

// The last label id a reward model was trained on (for data.since_label = -1:
// continue it on the labels added since).
int64_t labels_seen_by(const std::string& reward_model) {
  const std::string ckpt = resolve_checkpoint(reward_model);
  const std::string path = join_path(ckpt, "trainer_state.json");
  Json state;
  try {
    state = parse_json(read_file(path), path);
  } catch (const Json::exception& e) {
    fail(ErrorKind::kCorrupt, "'", path, "' is not valid JSON: ", e.what());
  }
  if (state.value("stage", std::string()) != "rm" || !state.contains("last_label_id"))
    fail(ErrorKind::kConfig, "data.since_label = -1 continues a reward model on newer labels, but init_from '",
         reward_model, "' is not a reward model trained from a label store");
  return state["last_label_id"].get<int64_t>();
}

void register_feedback_commands(CLI::App& app) {
  {
    auto args = std::make_shared<StageArgs>();
    CLI::App* sub = app.add_subcommand("candidates", "Sample K replies per prompt from policies and queue comparisons for rating");
    sub->add_option("--config", args->config, "TOML with the settings below (optional)");
    sub->allow_extras();
    sub->footer("Settings (--key=value): db, prompts, policies, temperatures, k, max_prompts, pairs "
                "(adjacent|all|ranking), required_raters, max_new_tokens, batch_size, seed, threads, weights (fp32|bf16)");
    add_action(sub, [args, sub] {
      auto cfg = load_config<labels::CandidatesConfig>(args->config, args->overrides(sub));
      const auto r = labels::queue_candidates(cfg);
      std::printf("%zu prompts, %zu new candidates, %zu new comparisons queued in %s\n", r.prompts, r.candidates,
                  r.comparisons, cfg.db.c_str());
    });
  }
  {
    auto args = std::make_shared<StageArgs>();
    CLI::App* sub = app.add_subcommand(
        "select", "Order the open comparisons so raters label first those that teach the reward model most");
    sub->add_option("--config", args->config, "TOML with the settings below (optional)");
    sub->allow_extras();
    sub->footer("Settings (--key=value): db, strategy (random|uncertainty|gradient|badge|disagreement|diversity), "
                "reward_models, random_floor, seed, spread_prompts, batch (badge: the picks spread together), batch_size, "
                "threads, device. The label service and `rlhf label` serve the "
                "comparisons in this order; run it again after the reward model is continued on new labels.");
    add_action(sub, [args, sub] {
      auto cfg = load_config<labels::SelectConfig>(args->config, args->overrides(sub));
      labels::checked_strategy(cfg.strategy, cfg.reward_models.size(), "strategy");
      if (!path_exists(cfg.db)) fail(ErrorKind::kIo, "label store '", cfg.db, "' does not exist");
      labels::LabelStore store(cfg.db);
      const auto r = labels::select_open_comparisons(store, cfg);
      std::printf("ordered %zu open comparisons by %s (%zu random picks, %zu replies scored) in %s\n", r.comparisons,
                  cfg.strategy.c_str(), r.random_picks, r.replies_scored, cfg.db.c_str());
    });
  }
  {
    auto args = std::make_shared<StageArgs>();
    CLI::App* sub = app.add_subcommand(
        "active", "Label in rounds with the simulated rater, continuing the reward model and re-selecting each round");
    sub->add_option("--config", args->config, "TOML with the settings below (optional)");
    sub->allow_extras();
    sub->footer("Settings (--key=value): db, out_dir, strategy, random_floor, spread_prompts, budgets, ensemble, eval_fraction, "
                "seed, rater, simulated.*, rm.* (as for rlhf rm train), scoring_batch. Writes out_dir/curve.json: "
                "the reward model's gold accuracy on held-out prompts after each round.");
    add_action(sub, [args, sub] {
      auto cfg = load_config<labels::ActiveLoopConfig>(args->config, args->overrides(sub));
      labels::validate_active_config(cfg);
      const auto points = labels::run_active_labelling(cfg);
      std::printf("%-8s %-14s %s\n", "labels", "gold accuracy", "round time");
      for (const auto& p : points) {
        std::printf("%-8lld %5.1f%% (%zu)  %.0f s\n", static_cast<long long>(p.labels), 100 * p.gold_accuracy,
                    p.gold_pairs, p.seconds);
      }
    });
  }
  {
    auto dirs = std::make_shared<std::vector<std::string>>();
    CLI::App* sub = app.add_subcommand("curves", "Learning curves of `rlhf active` runs as a markdown table");
    sub->add_option("dirs", *dirs, "the runs' out_dir folders, the baseline (e.g. random) first")->required();
    add_action(sub, [dirs] { std::printf("%s", labels::curve_table(*dirs).c_str()); });
  }
  {
    struct LabelArgs {
      std::string db = "runs/labels.sqlite";
      std::string rater = "simulated-1";
      bool simulated = false;
      SimulatedRaterConfig sim;
      size_t limit = SIZE_MAX;
    };
    auto a = std::make_shared<LabelArgs>();
    CLI::App* sub = app.add_subcommand("label", "Label queued comparisons (--simulated: the gold rubric with noise)");
    sub->add_option("--db", a->db, "label store")->capture_default_str();
    sub->add_flag("--simulated", a->simulated, "use the simulated rater (people rate with rlhf-rater)")->required();
    sub->add_option("--rater", a->rater, "rater name in the store")->capture_default_str();
    sub->add_option("--flip", a->sim.flip, "probability of preferring the worse reply")->capture_default_str();
    sub->add_option("--tie", a->sim.tie, "probability of answering tie")->capture_default_str();
    sub->add_option("--seed", a->sim.seed)->capture_default_str();
    sub->add_option("--limit", a->limit, "label at most this many");
    add_action(sub, [a] {
      labels::LabelStore store(a->db);
      const auto r = labels::label_simulated(store, a->rater, a->sim, a->limit);
      std::printf("%s labelled %zu comparisons (expected self-agreement %.1f%%)\n", a->rater.c_str(), r.labelled,
                  100 * expected_self_agreement(a->sim));
    });
  }
  {
    CLI::App* raters = app.add_subcommand("raters", "Manage the people who rate (tokens for the label service)");
    raters->require_subcommand(1);
    auto db = std::make_shared<std::string>("runs/labels.sqlite");
    auto name = std::make_shared<std::string>();
    CLI::App* add = raters->add_subcommand("add", "Create a rater and print their token (shown once; only a hash is kept)");
    add->add_option("name", *name, "rater name")->required();
    add->add_option("--db", *db, "label store")->capture_default_str();
    auto kind = std::make_shared<std::string>("human");
    add->add_option("--kind", *kind, "human (rates in rlhf-rater) or api (an API key for rlhf serve; any token works as one)")
        ->capture_default_str()->check(CLI::IsMember({"human", "api"}));
    add_action(add, [=] {
      labels::LabelStore store(*db);
      const std::string token = labels::new_rater_token();
      store.add_rater(*name, labels::sha256_hex(token), *kind);
      std::printf("rater '%s' added to %s\ntoken: %s\n(give it to the rater; it is not stored and cannot be shown "
                  "again)\n",
                  name->c_str(), db->c_str(), token.c_str());
    });
    CLI::App* revoke = raters->add_subcommand("revoke", "Invalidate a rater's token (their labels stay)");
    revoke->add_option("name", *name, "rater name")->required();
    revoke->add_option("--db", *db, "label store")->capture_default_str();
    add_action(revoke, [=] {
      labels::LabelStore store(*db);
      store.set_token_hash(*name, "");
      std::printf("rater '%s': token revoked; a running label service refuses it from the next connection\n",
                  name->c_str());
    });
    CLI::App* rotate = raters->add_subcommand("rotate", "Give a rater a new token (the old one stops working)");
    rotate->add_option("name", *name, "rater name")->required();
    rotate->add_option("--db", *db, "label store")->capture_default_str();
    add_action(rotate, [=] {
      labels::LabelStore store(*db);
      const std::string token = labels::new_rater_token();
      store.set_token_hash(*name, labels::sha256_hex(token));
      std::printf("rater '%s': new token: %s\n(the old token no longer works; this one is not stored and cannot be "
                  "shown again)\n",
                  name->c_str(), token.c_str());
    });
    CLI::App* list = raters->add_subcommand("list", "List raters");
    list->add_option("--db", *db, "label store")->capture_default_str();
    add_action(list, [=] {
      labels::LabelStore store(*db);
      for (const auto& r : store.raters()) std::printf("%-20s %s\n", r.name.c_str(), r.kind.c_str());
    });
  }
  {
    CLI::App* labels_cmd = app.add_subcommand("labels", "Import, export and inspect the label store");
    labels_cmd->require_subcommand(1);
    auto db = std::make_shared<std::string>("runs/labels.sqlite");
    auto file = std::make_shared<std::string>();
    auto rater = std::make_shared<std::string>("imported");
    auto since = std::make_shared<int64_t>(0);
    CLI::App* imp = labels_cmd->add_subcommand("import", "Import preference JSONL (pairs or rankings)");
    imp->add_option("file", *file, "JSONL: {prompt, chosen, rejected[, tie, margin]} or {prompt, responses, ranking}")->required();
    imp->add_option("--db", *db, "label store")->capture_default_str();
    imp->add_option("--rater", *rater, "rater the labels belong to")->capture_default_str();
    add_action(imp, [=] {
      labels::LabelStore store(*db);
      const auto s = store.import_jsonl(*file, *rater);
      std::printf("imported %zu pairs and %zu rankings into %s", s.pairs, s.rankings, db->c_str());
      if (s.already_there > 0) std::printf("; %zu were there already from '%s'", s.already_there, rater->c_str());
      if (s.disagreements > 0) {
        std::printf("; %zu disagree with another rater's label (see `rlhf labels stats`)", s.disagreements);
      }
      std::printf("\n");
    });
    CLI::App* stats = labels_cmd->add_subcommand(
        "stats", "Labels per rater, agreement (Cohen's kappa per pair, Krippendorff's alpha) and gold accuracy");
    stats->add_option("--db", *db, "label store")->capture_default_str();
    add_action(stats, [=] {
      labels::LabelStore store(*db);
      std::printf("%s", labels::format_agreement(labels::agreement_report(store)).c_str());
      const auto fb = labels::feedback_counts(store);
      if (fb.up + fb.down + fb.comments > 0) {
        std::printf("feedback from served replies: %zu thumbs up, %zu thumbs down (%zu paired into labels, %zu "
                    "unpaired: `rlhf labels export --unpaired FILE`), %zu comments\n",
                    fb.up, fb.down, fb.paired, fb.up + fb.down - fb.paired, fb.comments);
      }
    });
    auto gold_count = std::make_shared<size_t>(50);
    auto gold_gap = std::make_shared<double>(3.0);
    CLI::App* gold = labels_cmd->add_subcommand(
        "add-gold", "Mark comparisons with a clear answer (by the gold rubric) as gold items to measure raters");
    gold->add_option("--db", *db, "label store")->capture_default_str();
    gold->add_option("--count", *gold_count, "how many")->capture_default_str();
    gold->add_option("--min-gap", *gold_gap, "least difference in gold score")->capture_default_str();
    add_action(gold, [=] {
      labels::LabelStore store(*db);
      std::printf("marked %zu gold items in %s\n", labels::mark_gold_items(store, *gold_count, *gold_gap),
                  db->c_str());
    });
    CLI::App* exp = labels_cmd->add_subcommand("export", "Export labels as preference JSONL");
    exp->add_option("--db", *db, "label store")->capture_default_str();
    exp->add_option("--out", *file, "output JSONL");
    exp->add_option("--since", *since, "only labels with a larger id");
    auto unpaired = std::make_shared<std::string>();
    exp->add_option("--unpaired", *unpaired,
                    "also write thumbs no pair used, as {prompt, completion, label} JSONL (KTO's unpaired shape)");
    add_action(exp, [=] {
      if (file->empty() && unpaired->empty()) fail(ErrorKind::kUsage, "labels export needs --out FILE, --unpaired FILE or both");
      labels::LabelStore store(*db);
      if (!file->empty()) std::printf("exported %zu records to %s\n", store.export_jsonl(*file, *since), file->c_str());
      if (!unpaired->empty()) {
        const auto rows = labels::unpaired_feedback(store);
        JsonlWriter w(*unpaired, /*append=*/false);
        for (const auto& r : rows) w.write(r);
        std::printf("exported %zu unpaired thumbs to %s\n", rows.size(), unpaired->c_str());
      }
    });
  }
  {
    CLI::App* rm = app.add_subcommand("rm", "Reward model: train, eval, score");
    rm->require_subcommand(1);
    auto args = std::make_shared<StageArgs>();
    CLI::App* train = rm->add_subcommand("train", "Train a reward model (Bradley-Terry) on labelled comparisons");
    train->add_option("--config", args->config, "TOML config (see configs/rm.toml)");
    train->allow_extras();
    add_action(train, [args, train] {
      auto cfg = load_config<RewardTrainConfig>(args->config, args->overrides(train));
      if (cfg.data.since_label < 0) cfg.data.since_label = labels_seen_by(cfg.init_from);
      Pairs p = load_pairs(cfg.data.preferences, cfg.data.eval_fraction, cfg.data.since_label,
                           static_cast<uint64_t>(cfg.train.seed));
      const DistInfo dist = init_distributed();
      const RewardTrainResult r = run_reward_training(cfg, p.train, p.eval, p.last_label_id, dist);
      if (!dist.is_main()) return;
      std::printf("\nreward model: %s\nheld-out accuracy: %.1f%% vs labels (%zu pairs), %.1f%% vs gold (%zu pairs)\n",
                  r.checkpoint.c_str(), 100 * r.eval.label_accuracy, r.eval.pairs, 100 * r.eval.gold_accuracy,
                  r.eval.gold_pairs);
    });

    // `rlhf dpo`: the same labels, straight into the policy (no reward model).
    {
      auto dargs = std::make_shared<StageArgs>();
      CLI::App* dpo = app.add_subcommand(
          "dpo", "Preference optimisation on labelled comparisons without a reward model (DPO, cDPO, robust, IPO, hinge)");
      dpo->add_option("--config", dargs->config, "TOML config (see configs/dpo.toml)");
      dpo->allow_extras();
      add_action(dpo, [dargs, dpo] {
        auto cfg = load_config<DpoConfig>(dargs->config, dargs->overrides(dpo));
        validate_dpo_config(cfg);  // a typo fails before any model loads
        Pairs p = load_pairs(cfg.data.preferences, cfg.data.eval_fraction, std::max<int64_t>(0, cfg.data.since_label),
                             static_cast<uint64_t>(cfg.train.seed));
        const DistInfo dist = init_distributed();
        const DpoResult r = run_dpo(cfg, p.train, p.eval, p.last_label_id, dist);
        if (!dist.is_main()) return;
        std::printf("\npolicy: %s\nheld-out pairs: loss %.4f, accuracy %.1f%%, margin %.3f, log-probs chosen %.2f "
                    "rejected %.2f\n",
                    r.checkpoint.c_str(), r.eval.loss, 100 * r.eval.accuracy, r.eval.margin, r.eval.chosen_logp,
                    r.eval.rejected_logp);
      });
    }

    struct EvalArgs {
      std::string model, preferences, dump;
      double eval_fraction = 0.1;
      bool all = false;
      bool share_prompts = true;
      int64_t seed = 42;
      int threads = 0;
    };
    auto e = std::make_shared<EvalArgs>();
    CLI::App* ev = rm->add_subcommand("eval", "Accuracy of a reward model on held-out pairs, against labels and gold");
    ev->add_option("--model", e->model, "reward model checkpoint or run folder")->required();
    ev->add_option("--preferences", e->preferences, "label store (.sqlite) or JSONL")->required();
    ev->add_option("--eval-fraction", e->eval_fraction, "held-out share of prompts (same split as training)")->capture_default_str();
    ev->add_option("--seed", e->seed, "split seed (train.seed of the run)")->capture_default_str();
    ev->add_flag("--all", e->all, "evaluate on every pair, not only the held-out split");
    ev->add_option("--dump", e->dump, "write one JSONL record per pair (rewards, gold findings) for error analysis");
    ev->add_option("--share-prompts", e->share_prompts,
                   "score each distinct reply once, its prompt's tokens once for all its replies (false: every pair's "
                   "two sequences whole, as before; the same scores to float rounding)")
        ->capture_default_str();
    ev->add_option("--threads", e->threads)->capture_default_str();
    add_action(ev, [e] {
      set_torch_threads(e->threads);
      LoadedRewardModel m = load_reward_model(e->model);
      Pairs p = load_pairs(e->preferences, e->all ? 1.0 : e->eval_fraction, 0, static_cast<uint64_t>(e->seed));
      const ChatTemplate chat(m.tokenizer);
      std::vector<Json> records;
      const RewardEval r =
          evaluate_reward_model(m.model, chat, p.eval, 32, torch::kCPU, e->dump.empty() ? nullptr : &records,
                                e->share_prompts);
      if (!e->dump.empty()) {
        JsonlWriter out(e->dump, /*append=*/false);
        for (const Json& rec : records) out.write(rec);
      }
      std::printf("%s\n", r.to_json().dump(2).c_str());
    });

    struct ScoreArgs {
      std::string model, replies, out;
      int threads = 0;
    };
    auto s = std::make_shared<ScoreArgs>();
    CLI::App* sc = rm->add_subcommand("score", "Score replies in a JSONL file (prompt, response): adds \"reward\"");
    sc->add_option("--model", s->model, "reward model checkpoint or run folder")->required();
    sc->add_option("--replies", s->replies, "JSONL with prompt and response (e.g. rlhf generate output)")->required();
    sc->add_option("--out", s->out, "output JSONL")->required();
    sc->add_option("--threads", s->threads)->capture_default_str();
    add_action(sc, [s] {
      set_torch_threads(s->threads);
      LoadedRewardModel m = load_reward_model(s->model);
      const ChatTemplate chat(m.tokenizer);
      std::vector<Json> rows;
      std::vector<Conversation> prompts;
      std::vector<std::string> replies;
      std::vector<bool> finished;
      read_jsonl(s->replies, [&](const Json& row, size_t line) {
        rows.push_back(row);
        prompts.push_back(prompt_from_json(row, s->replies, line, ""));
        replies.push_back(jsonl_string(row, "response", s->replies, line));
        finished.push_back(row.value("finished", true));
      });
      std::vector<const Conversation*> pp;
      std::vector<const std::string*> rp;
      for (size_t i = 0; i < rows.size(); ++i) {
        pp.push_back(&prompts[i]);
        rp.push_back(&replies[i]);
      }
      const std::vector<double> raw = score_replies(m.model, chat, pp, rp, 32, torch::kCPU, finished);
      JsonlWriter out(s->out, false);
      double mean = 0;
      for (size_t i = 0; i < rows.size(); ++i) {
        Json row = rows[i];
        row["reward"] = m.model->gain * raw[i] + m.model->bias;
        mean += row["reward"].get<double>() / rows.size();
        out.write(row);
      }
      std::printf("scored %zu replies (mean normalised reward %.3f) -> %s\n", rows.size(), mean, s->out.c_str());
    });
  }
}

}  // namespace rlhf::cli

// rlhf ppo | grpo | rloo | compare | pipeline
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"
#include "train/distributed.h"
#include "rollout/compare.h"
#include "rollout/live_feedback.h"
#include "rollout/pipeline.h"
#include "rollout/grpo.h"
#include "rollout/ppo.h"

namespace rlhf::cli {

void register_rollout_commands(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  CLI::App* sub = app.add_subcommand("ppo", "Fine-tune a policy with PPO against a reward model (KL leash to the SFT model)");
  sub->add_option("--config", args->config, "TOML config (see configs/ppo.toml)");
  sub->allow_extras();
  sub->footer(
      "Overrides: --section.key=value, e.g. --train.iterations=20 --kl.coef=0.1\n"
      "Online RLHF: --feedback.db=labels.sqlite --feedback.every=5 queues fresh reply pairs for raters");
  add_action(sub, [args, sub] {
    auto cfg = load_config<PpoConfig>(args->config, args->overrides(sub));
    const DistInfo dist = init_distributed();
    const FreshPairsFn feedback =
        dist.is_main() ? label_store_sink(cfg.feedback, cfg.out_dir, cfg.rollout.temperature) : nullptr;
    const PpoResult r = run_ppo(cfg, nullptr, dist, feedback);
    if (!dist.is_main()) return;
    std::printf("\nfinal checkpoint: %s\nbest checkpoint:  %s\n", r.checkpoint.c_str(), r.best_checkpoint.c_str());
    for (const auto& v : r.validations) std::printf("%s\n", v.to_json().dump().c_str());
  });

  // GRPO and RLOO: one stage, two commands with their own defaults.
  for (const bool rloo : {false, true}) {
    auto gargs = std::make_shared<StageArgs>();
    CLI::App* g = app.add_subcommand(
        rloo ? "rloo" : "grpo",
        rloo ? "Fine-tune a policy with RLOO: K samples per prompt, leave-one-out baseline, KL in the reward"
             : "Fine-tune a policy with GRPO: K samples per prompt, group-normalised advantage, no value model");
    g->add_option("--config", gargs->config, "TOML config (see configs/grpo.toml)");
    g->allow_extras();
    g->footer(
        "Overrides: --section.key=value, e.g. --rollout.samples=8 --train.advantage=dr_grpo "
        "--train.loss_aggregation=constant --reward.rubric=1\n"
        "Every key with its default: rlhf config " + std::string(rloo ? "rloo" : "grpo"));
    add_action(g, [gargs, g, rloo] {
      auto cfg = load_config<GrpoConfig>(gargs->config, gargs->overrides(g), rloo ? rloo_defaults() : GrpoConfig());
      const DistInfo dist = init_distributed();
      validate_grpo_config(cfg, dist.world_size);
      const FreshPairsFn feedback = dist.is_main() ? label_store_sink(cfg.feedback, cfg.out_dir, cfg.rollout.temperature,
                                                                      cfg.train.advantage)
                                                   : nullptr;
      const OnlineResult r = run_grpo(cfg, nullptr, dist, feedback);
      if (!dist.is_main()) return;
      std::printf("\nfinal checkpoint: %s\nbest checkpoint:  %s\n", r.checkpoint.c_str(), r.best_checkpoint.c_str());
      for (const auto& v : r.validations) std::printf("%s\n", v.to_json().dump().c_str());
    });
  }

  auto c = std::make_shared<CompareConfig>();
  CLI::App* cmp = app.add_subcommand("compare", "Compare policies on held-out prompts: win rates with 95% intervals, leaderboard");
  cmp->add_option("policies", c->policies, "two or more checkpoints or run folders")->required()->expected(2, -1);
  cmp->add_option("--names", c->names, "display names, one per policy");
  cmp->add_option("--prompts", c->prompts, "JSONL prompts (metadata enables the gold judge)")->capture_default_str();
  cmp->add_option("--max-prompts", c->max_prompts, "use the first N prompts (0 = all)")->capture_default_str();
  cmp->add_option("--reward-model", c->reward_model, "judge by this reward model too");
  cmp->add_option("--reference", c->reference, "report each policy's KL from this policy (e.g. the SFT one)");
  cmp->add_option("--gold", c->gold, "judge by the simulated rater where prompts carry facts")->capture_default_str();
  cmp->add_option("--temperature", c->sampling.temperature)->capture_default_str();
  cmp->add_option("--max-new-tokens", c->sampling.max_new_tokens)->capture_default_str();
  cmp->add_option("--seed", c->sampling.seed)->capture_default_str();
  add_weights_option(cmp, c->sampling.weights);
  cmp->add_option("--samples", c->samples, "replies per prompt and policy")->capture_default_str();
  cmp->add_option("--bootstrap", c->bootstrap, "resamples for the 95% intervals")->capture_default_str();
  cmp->add_option("--out", c->out, "output folder (compare.json, compare.md, replies.jsonl)")->capture_default_str();
  cmp->add_option("--threads", c->threads)->capture_default_str();
  add_action(cmp, [c] {
    const CompareReport r = run_compare(*c);
    std::printf("%s\nwritten to %s/compare.md and compare.json\n", r.to_markdown().c_str(), c->out.c_str());
  });

  auto pargs = std::make_shared<StageArgs>();
  CLI::App* pipe = app.add_subcommand(
      "pipeline", "Run every stage: pretrain, SFT, candidates, simulated labels, reward model, PPO, comparison");
  pipe->add_option("--config", pargs->config, "TOML config (configs/demo.toml; configs/ci.toml is the small one)");
  auto report_dirs = std::make_shared<std::vector<std::string>>();
  pipe->add_option("--report", *report_dirs,
                   "Print the stage table and headline results of the finished run in DIR (from its summary.json) "
                   "and exit; with several DIRs (e.g. one per --seed), their headline figures side by side, with "
                   "mean, range and the demo's bars");
  pipe->allow_extras();
  pipe->footer("Overrides: --section.key=value, e.g. --ppo.train.iterations=10, --seed=2 (every stage's seed).\n"
               "Finished stages are skipped while their inputs are unchanged; a killed run continues where it stopped.");
  add_action(pipe, [pargs, pipe, report_dirs] {
    if (report_dirs->size() == 1) {
      std::printf("%s", pipeline_report(read_json_file(join_path(report_dirs->front(), "summary.json"))).c_str());
      return;
    }
    if (report_dirs->size() > 1) {
      std::vector<std::pair<std::string, Json>> runs;
      for (const std::string& dir : *report_dirs) runs.emplace_back(dir, read_json_file(join_path(dir, "summary.json")));
      std::printf("%s", seeds_report(runs).c_str());
      return;
    }
    auto cfg = load_config<PipelineConfig>(pargs->config, pargs->overrides(pipe));
    if (init_distributed().world_size > 1) {
      fail(ErrorKind::kUsage, "rlhf pipeline runs as one process; launch the training stages (pretrain, sft, "
                              "rm train, ppo) with torchrun instead");
    }
    const Json s = run_pipeline(cfg);
    std::printf("\n== pipeline finished: %s\n\n%s", cfg.out_dir.c_str(), pipeline_report(s).c_str());
    const std::string md = cfg.out_dir + "/compare/compare.md";
    if (s.contains("compare") && path_exists(md)) std::printf("\n%s", read_file(md).c_str());
    std::printf("\nvalidation over PPO: %s/ppo/validation.md; this report: %s/report.md\n", cfg.out_dir.c_str(),
                cfg.out_dir.c_str());
  });
}

}  // namespace rlhf::cli

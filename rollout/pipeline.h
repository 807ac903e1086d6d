// The whole workbench in one command (`rlhf pipeline --config FILE`):
// pretrain -> SFT -> candidates -> simulated labels -> reward model -> PPO
// (with validation) -> comparison of SFT and PPO. List "dpo", "grpo" and
// "rloo" in `stages` too and they train from the same SFT model and labels
// (and reward model), and the comparison takes every trained policy. Each stage writes into
// its own folder of one run; a finished stage is skipped when the pipeline
// runs again, and a killed stage resumes from its checkpoints, but only while
// its fingerprint (settings, input files, the stages it reads, the program
// version: rollout/stage_fingerprint.h) is the one it ran with. The thread
// counts are left out of it: they may change when a run resumes. A stage whose
// fingerprint changed is run again (its old output moved to
// <out_dir>/stale/) or the pipeline refuses, as `on_change` says.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "labels/active.h"
#include "labels/feedback.h"
#include "policy/sft.h"
#include "pretrain/pretrain.h"
#include "reward/rm_train.h"
#include "dpo/dpo.h"
#include "rollout/compare.h"
#include "rollout/grpo.h"
#include "rollout/ppo.h"

namespace rlhf {

struct PipelineConfig {
  std::string out_dir = "runs/demo";  // one folder per stage inside
  std::vector<std::string> stages = {"pretrain", "sft", "candidates", "label", "rm", "ppo", "compare"};
  std::string simulated_rater = "simulated-1";  // rater name of the simulated labels
  // Which comparisons the label stage labels: "all" of them, or "active":
  // [active].budgets labels in rounds chosen by [active].strategy (rlhf
  // active), plus every comparison of the reward model's held-out prompts,
  // which measure it.
  std::string label_selection = "all";
  // When a finished or started stage's fingerprint differs from now:
  // "rerun" moves its output to <out_dir>/stale/TIME/ and runs it again (the
  // stages that read it follow, their fingerprints having changed too);
  // "refuse" stops before running anything and says which stage and why.
  std::string on_change = "rerun";
  // 0: every stage keeps its own seed. Otherwise each stage's seeds (data
  // order, initialisation, sampling, label noise, held-out split) derive
  // from this one, so `--seed=1,2,3` runs are the pipeline over seeds.
  int64_t seed = 0;
  // "": every stage keeps its own sampling precision. "fp32" or "bf16":
  // every sampling stage uses it (candidates, PPO/GRPO/RLOO rollouts and
  // validation, compare); training and scoring follow `precision`. "auto":
  // bf16 where the CPU has native bf16 (AVX512-BF16), else fp32.
  std::string sampling_weights;
  // "": every stage keeps its own train.precision. "fp32", "bf16" or "auto"
  // (as above): every training stage uses it (pretrain, sft, rm, ppo, dpo,
  // grpo, rloo; bf16 is mixed precision: bf16 GEMMs, fp32 weights and
  // optimiser). report.md says what each resolved to.
  std::string precision;
  // 0: every stage keeps its own thread count. N: every stage uses N
  // LibTorch threads (e.g. 1 to run two seeds side by side on 2 cores).
  // Threads change float rounding only, so fingerprints leave them out.
  int threads = 0;
  // "": every training stage keeps its own train.device. "cpu", "cuda",
  // "cuda:N" or "auto" (CUDA when available): every training stage (pretrain,
  // sft, rm, ppo, dpo, grpo, rloo, active labelling's reward model) trains,
  // samples and scores there; the candidates, label and compare stages stay
  // on the CPU.
  std::string device;
  // Stage settings. Paths that link stages (out_dir, init_from, policy,
  // reward_model, db, preferences, policies, out) are set by the pipeline.
  PretrainConfig pretrain;
  SftConfig sft;
  labels::CandidatesConfig candidates;
  SimulatedRaterConfig label;
  labels::ActiveLoopConfig active;  // with label_selection = "active"
  RewardTrainConfig rm;
  PpoConfig ppo;
  DpoConfig dpo;                   // with "dpo" in stages: on the reward model's labels
  GrpoConfig grpo;                 // with "grpo" in stages
  GrpoConfig rloo = rloo_defaults();  // with "rloo" in stages
  CompareConfig compare;
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("stages", stages);
    v("simulated_rater", simulated_rater);
    v("label_selection", label_selection);
    v("on_change", on_change);
    v("seed", seed);
    v("sampling_weights", sampling_weights);
    v("precision", precision);
    v("threads", threads, Range::at_least(0));
    v("device", device);
    v.section("pretrain", pretrain);
    v.section("sft", sft);
    v.section("candidates", candidates);
    v.section("label", label);
    v.section("active", active);
    v.section("rm", rm);
    v.section("ppo", ppo);
    v.section("dpo", dpo);
    v.section("grpo", grpo);
    v.section("rloo", rloo);
    v.section("compare", compare);
  }
};

// Sets the linking paths of every stage under config.out_dir.
PipelineConfig wire_pipeline(PipelineConfig config);

// Runs the stages in order; returns the summary written to summary.json
// (and writes report.md from it).
Json run_pipeline(const PipelineConfig& config);

// The stage table and the headline results of a run, in Markdown, from its
// summary.json alone: what the README and docs/results.md quote.
std::string pipeline_report(const Json& summary);

// The demo's bars for its headline figures, judged by gold.
struct HeadlineBars {
  double rm_gold_accuracy = 0.85;  // reward model's held-out accuracy vs gold, at least
  double ppo_win_rate = 0.70;      // PPO's win rate against SFT by gold (ties half), at least
  double ppo_interval_low = 0.60;  // ... and its 95% interval's low end, above
};

// The headline figures of several runs (e.g. one per pipeline seed) from
// their summary.json files, named by their folders: one row per run, mean
// and range, and for each bar the runs that miss it. What docs/results.md's
// seeds table quotes.
std::string seeds_report(const std::vector<std::pair<std::string, Json>>& runs, const HeadlineBars& bars = {});

}  // namespace rlhf

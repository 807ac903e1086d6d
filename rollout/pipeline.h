// The whole workbench in one command (`rlhf pipeline --config FILE`):
// pretrain -> SFT -> candidates -> simulated labels -> reward model -> PPO
// (with validation) -> comparison of SFT and PPO. Each stage writes into
// its own folder of one run; a finished stage is skipped when the pipeline
// runs again, and a killed stage resumes from its checkpoints.
#pragma once

#include <string>
#include <vector>

#include "labels/feedback.h"
#include "policy/sft.h"
#include "pretrain/pretrain.h"
#include "reward/rm_train.h"
#include "rollout/compare.h"
#include "rollout/ppo.h"

namespace rlhf {

struct PipelineConfig {
  std::string out_dir = "runs/demo";  // one folder per stage inside
  std::vector<std::string> stages = {"pretrain", "sft", "candidates", "label", "rm", "ppo", "compare"};
  std::string simulated_rater = "simulated-1";  // rater name of the simulated labels
  // Stage settings. Paths that link stages (out_dir, init_from, policy,
  // reward_model, db, preferences, policies, out) are set by the pipeline.
  PretrainConfig pretrain;
  SftConfig sft;
  labels::CandidatesConfig candidates;
  SimulatedRaterConfig label;
  RewardTrainConfig rm;
  PpoConfig ppo;
  CompareConfig compare;
  template <class V> void visit(V& v) {
    v("out_dir", out_dir);
    v("stages", stages);
    v("simulated_rater", simulated_rater);
    v.section("pretrain", pretrain);
    v.section("sft", sft);
    v.section("candidates", candidates);
    v.section("label", label);
    v.section("rm", rm);
    v.section("ppo", ppo);
    v.section("compare", compare);
  }
};

// Sets the linking paths of every stage under config.out_dir.
PipelineConfig wire_pipeline(PipelineConfig config);

// Runs the stages in order; returns the summary written to summary.json.
Json run_pipeline(const PipelineConfig& config);

}  // namespace rlhf

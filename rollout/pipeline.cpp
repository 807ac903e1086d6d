#include "rollout/pipeline.h"

#include <chrono>
#include <cmath>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "train/run_dir.h"

namespace rlhf {
namespace {

const std::vector<std::string> kStages = {"pretrain", "sft", "candidates", "label", "rm", "ppo", "compare"};

std::string marker(const PipelineConfig& c, const std::string& stage) {
  return join_path(c.out_dir, "stages/" + stage + ".done");
}

}  // namespace

PipelineConfig wire_pipeline(PipelineConfig c) {
  auto in = [&](const std::string& name) { return join_path(c.out_dir, name); };
  c.pretrain.out_dir = in("pretrain");
  c.sft.out_dir = in("sft");
  c.sft.init_from = in("pretrain");
  c.candidates.db = in("labels.sqlite");
  c.candidates.policies = {in("sft")};
  c.rm.out_dir = in("rm");
  c.rm.init_from = in("sft");
  c.rm.data.preferences = in("labels.sqlite");
  c.ppo.out_dir = in("ppo");
  c.ppo.policy = in("sft");
  c.ppo.reward_model = in("rm");
  c.compare.policies = {in("ppo"), in("sft")};
  c.compare.names = {"ppo", "sft"};
  c.compare.reward_model = in("rm");
  c.compare.out = in("compare");
  return c;
}

Json run_pipeline(const PipelineConfig& config) {
  const PipelineConfig c = wire_pipeline(config);
  for (const auto& s : c.stages) {
    if (std::find(kStages.begin(), kStages.end(), s) == kStages.end()) {
      fail(ErrorKind::kConfig, "pipeline.stages: unknown stage '", s,
           "'; stages are pretrain, sft, candidates, label, rm, ppo, compare");
    }
  }
  make_dirs(join_path(c.out_dir, "stages"));
  write_file_atomic(join_path(c.out_dir, "config.toml"), json_to_toml(config_to_json(c)));
  const std::string summary_path = join_path(c.out_dir, "summary.json");
  Json summary = path_exists(summary_path) ? read_json_file(summary_path) : Json::object();

  for (const std::string& stage : c.stages) {
    if (path_exists(marker(c, stage))) {
      log_info("== ", stage, ": done already (delete ", marker(c, stage), " to run it again)");
      continue;
    }
    log_info("== ", stage);
    const auto t0 = std::chrono::steady_clock::now();
    Json result = Json::object();
    if (stage == "pretrain") {
      const PretrainResult r = run_pretrain(c.pretrain);
      result = {{"checkpoint", r.checkpoint}, {"val_loss", r.final_val_loss}, {"samples", r.samples}};
    } else if (stage == "sft") {
      const SftResult r = run_sft(c.sft);
      result = {{"checkpoint", r.best_checkpoint}, {"best_val_loss", r.best_val_loss}, {"samples", r.samples}};
    } else if (stage == "candidates") {
      const auto r = labels::queue_candidates(c.candidates);
      result = {{"prompts", r.prompts}, {"candidates", r.candidates}, {"comparisons", r.comparisons}};
    } else if (stage == "label") {
      labels::LabelStore store(c.candidates.db);
      const auto r = labels::label_simulated(store, c.simulated_rater, c.label);
      result = {{"labels", r.labelled}, {"expected_self_agreement", expected_self_agreement(c.label)}};
    } else if (stage == "rm") {
      labels::LabelStore store(c.rm.data.preferences);
      int64_t last = 0;
      auto [train, eval] = split_by_prompt(labels::store_preferences(store, c.rm.data.since_label, &last),
                                           c.rm.data.eval_fraction, static_cast<uint64_t>(c.rm.train.seed));
      const RewardTrainResult r = run_reward_training(c.rm, train, eval, last);
      result = {{"checkpoint", r.checkpoint}, {"eval", r.eval.to_json()}};
    } else if (stage == "ppo") {
      const PpoResult r = run_ppo(c.ppo);
      Json validations = Json::array();
      for (const auto& v : r.validations) validations.push_back(v.to_json());
      result = {{"checkpoint", r.checkpoint}, {"best_checkpoint", r.best_checkpoint}, {"validations", validations}};
    } else if (stage == "compare") {
      const CompareReport r = run_compare(c.compare);
      result = r.to_json();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result["seconds"] = seconds;
    summary[stage] = result;
    write_file_atomic(summary_path, summary.dump(2));
    write_file_atomic(marker(c, stage), result.dump(2));
    log_info("== ", stage, " finished in ", format_duration(seconds));
  }
  double total = 0;
  for (auto it = summary.begin(); it != summary.end(); ++it) {
    if (it.value().is_object() && it.value().contains("seconds")) total += it.value()["seconds"].get<double>();
  }
  summary["total_seconds"] = total;
  write_file_atomic(summary_path, summary.dump(2));
  return summary;
}

}  // namespace rlhf

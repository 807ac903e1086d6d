// The scaffold every training loop runs on (pretrain, SFT, reward model,
// DPO, PPO, GRPO/RLOO): one run folder, resume from its latest checkpoint
// by an explicit rule for which settings may change, rank 0's parameters
// broadcast and gradients summed across ranks, checkpoints saved, marked
// and pruned, metrics appended. A stage keeps only what is its own: its
// models, its step and its extra state.
//
//   TrainingRun run("sft", cfg.out_dir, config_to_json(cfg), cfg.train, rules, dist);
//   ... load models (on run.device()) and make the optimiser ...
//   if (const auto& r = run.resume()) { restore from r->dir; start = r->state.step; }
//   run.start(params, start);
//   for (step = start; ...) { ...; run.sync().arm(); loss.backward(); run.sync().finish(); ...
//     run.log(row);
//     if (run.checkpoint_due(done, total)) run.commit(done, best, write_folder); }
//   run.finish();
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/config.h"
#include "train/distributed.h"
#include "train/optim.h"
#include "train/run_dir.h"

namespace rlhf {

// The [train] settings every stage shares. A stage's loop config derives
// from it and sets its own defaults in its constructor; the keys stay in
// the stage's [train] section.
struct RunSettings {
  int64_t seed = 42;            // data order, initialisation, dropout and sampling
  int threads = 0;              // LibTorch threads (0 = all CPUs available)
  std::string device = "cpu";   // "cpu", "cuda" or "auto"
  int checkpoint_interval = 0;  // steps (online stages: iterations) between checkpoints (0 = only at the end)
  int keep_checkpoints = 2;     // newest step checkpoints kept on disk (the best is always kept)
  std::string precision = "fp32";  // GEMMs in "fp32" or "bf16" (mixed precision: fp32 weights and optimiser)
  template <class V> void visit_run(V& v) {
    v("seed", seed);
    v("threads", threads, Range::at_least(0));
    v("device", device);
    v("checkpoint_interval", checkpoint_interval, Range::at_least(0));
    v("keep_checkpoints", keep_checkpoints, Range::at_least(1));
    v("precision", precision);
  }
};

// Which settings may change when a run is started again in a folder that
// already holds it. Names are config sections ("data") or dotted keys
// ("kl.coef"). The seed is always fixed: data order and sampling are
// functions of seed and step, so a new seed would splice two runs.
struct ResumeRules {
  // Changing these would mix two runs: refused, naming the first difference.
  std::vector<std::string> fixed;
  // State the run carries in its checkpoints (an adaptive KL coefficient):
  // the saved value continues, and a new configured value is reported as
  // not applied.
  std::vector<std::string> carried;
  // A finished run (its last checkpoint says so) trains afresh when started
  // again, instead of resuming (the reward model retrains on grown labels).
  bool restart_finished = false;
  // Every other setting may change: the change is logged and applies from
  // the resumed step on.

  static ResumeRules fixing(std::vector<std::string> names) {
    ResumeRules r;
    r.fixed = std::move(names);
    return r;
  }
};

// What every checkpoint's trainer_state.json holds. The stage's own fields
// (best loss so far, KL coefficient, validation history, ...) sit beside
// these at the top level of the file.
struct TrainerState {
  std::string stage;             // "pretrain", "sft", "rm", "dpo", "ppo", "grpo", "rloo"
  int64_t step = 0;              // optimiser steps (online stages: iterations) done
  bool finished = false;         // written by a run's final save
  Json config = Json::object();  // the resolved run config
  Json extra = Json::object();   // the stage's own fields

  Json to_json() const;
  // <checkpoint_dir>/trainer_state.json. A missing or mistyped core field
  // is an error naming the file. Reads the older names too ("iteration",
  // "done").
  static TrainerState read(const std::string& checkpoint_dir);
  // A stage field, or `fallback` when absent or null (JSON has no infinity).
  double number(const char* key, double fallback) const;
  int64_t integer(const char* key, int64_t fallback) const;
};

class TrainingRun {
 public:
  struct Resume {
    std::string dir;      // the checkpoint folder
    TrainerState state;
  };

  // Opens (rank 0: creates) the run folder `out_dir` for `stage`: checks
  // `config` against the config already there by `rules` (errors before any
  // model loads), writes config.toml, sets LibTorch's threads and finds the
  // checkpoint to resume from.
  TrainingRun(std::string stage, const std::string& out_dir, const Json& config, const RunSettings& settings,
              const ResumeRules& rules, const DistInfo& dist);
  ~TrainingRun();
  TrainingRun(const TrainingRun&) = delete;
  TrainingRun& operator=(const TrainingRun&) = delete;

  const std::string& stage() const { return stage_; }
  RunDir& dir() { return dir_; }
  const DistInfo& dist() const { return dist_; }
  torch::Device device() const { return device_; }
  int threads() const { return threads_; }
  // The GEMM dtype the stage's trained models use (set_compute_dtype):
  // nullopt for fp32.
  c10::optional<torch::ScalarType> compute_dtype() const { return compute_dtype_; }
  const RunSettings& settings() const { return settings_; }

  // The checkpoint this run continues from, if any.
  const std::optional<Resume>& resume() const { return resume_; }
  int64_t resume_step() const { return resume_ ? resume_->state.step : 0; }

  // Call once the trainable parameters exist and the checkpoint (if any) is
  // restored into them: drops metrics a killed run logged after
  // `start_step`, copies rank 0's parameters to every rank and sets up the
  // gradient all-reduce over them.
  void start(std::vector<NamedParameter> params, int64_t start_step);
  GradientSync& sync();

  // Ends optimiser step `step` (from 0) of `total`: waits for the summed
  // gradients, clips their global norm to `grad_clip` (0 = off), steps
  // `optimizer` at the schedule's learning rate and zeroes the gradients.
  struct StepDone {
    double grad_norm = 0, lr = 0;
  };
  StepDone finish_step(AdamW& optimizer, const ScheduleConfig& schedule, int64_t step, int64_t total, double grad_clip);

  // A metrics row (rank 0).
  void log(const Json& row) { dir_.log_metrics(row); }

  // Every checkpoint_interval steps, and at the last.
  bool checkpoint_due(int64_t done, int64_t total) const;
  // The trainer state of a checkpoint at `step`: stage, step, config and
  // the stage's fields.
  TrainerState state(int64_t step, Json extra, bool finished = false) const;
  // Rank 0 saves the checkpoint of `step`: `write(folder)` writes the whole
  // folder (atomically, as save_checkpoint does), then "latest" (with `best`
  // also "best") names it and step folders beyond keep_checkpoints go.
  // Other ranks do nothing. Returns the folder ("" on other ranks).
  std::string commit(int64_t step, bool best, const std::function<void(const std::string& folder)>& write);
  // Waits for every rank: rank 0's checkpoints are then on disk.
  void finish();

 private:
  std::string stage_;
  RunDir dir_;
  RunSettings settings_;
  DistInfo dist_;
  Json config_;
  torch::Device device_;
  c10::optional<torch::ScalarType> compute_dtype_;
  int threads_ = 0;
  std::optional<Resume> resume_;
  std::vector<NamedParameter> params_;
  std::unique_ptr<GradientSync> sync_;
};

// What changed between a run folder's config and a new one, by `rules`:
// `refused` holds the first difference in a fixed section or key (empty if
// none), `carried` the changed carried keys, `other` every other change,
// each as "key (old -> new)".
struct ConfigChanges {
  std::string refused;
  std::vector<std::string> carried, other;
};
ConfigChanges config_changes(const Json& old_config, const Json& new_config, const ResumeRules& rules);

}  // namespace rlhf

#include "train/training_run.h"

#include <sstream>

#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "train/checkpoints.h"
#include "train/runtime.h"

namespace rlhf {
namespace {

// Every leaf that differs, as "key (old -> new)" with dotted keys.
void diff_leaves(const Json& a, const Json& b, const std::string& prefix, std::vector<std::pair<std::string, std::string>>& out) {
  for (auto it = a.begin(); it != a.end(); ++it) {
    const std::string key = prefix + it.key();
    if (!b.contains(it.key())) {
      out.emplace_back(key, str_cat(key, " (", it.value().dump(), " -> removed)"));
    } else if (it.value().is_object() && b[it.key()].is_object()) {
      diff_leaves(it.value(), b[it.key()], key + ".", out);
    } else if (it.value() != b[it.key()]) {
      out.emplace_back(key, str_cat(key, " (", it.value().dump(), " -> ", b[it.key()].dump(), ")"));
    }
  }
  for (auto it = b.begin(); it != b.end(); ++it) {
    if (!a.contains(it.key())) out.emplace_back(prefix + it.key(), str_cat(prefix, it.key(), " (added: ", it.value().dump(), ")"));
  }
}

// "data" covers "data" and "data.train_file"; "kl.coef" only itself.
bool covered(const std::string& key, const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    if (key == n || (key.size() > n.size() && key.compare(0, n.size(), n) == 0 && key[n.size()] == '.')) return true;
  }
  return false;
}

const char* kCoreKeys[] = {"stage", "step", "iteration", "finished", "done", "config"};

}  // namespace

ConfigChanges config_changes(const Json& old_config, const Json& new_config, const ResumeRules& rules) {
  std::vector<std::pair<std::string, std::string>> diffs;
  diff_leaves(old_config, new_config, "", diffs);
  std::vector<std::string> fixed = rules.fixed;
  fixed.push_back("train.seed");
  ConfigChanges out;
  for (const auto& [key, text] : diffs) {
    if (covered(key, fixed)) {
      if (out.refused.empty()) out.refused = text;
    } else if (covered(key, rules.carried)) {
      out.carried.push_back(text);
    } else {
      out.other.push_back(text);
    }
  }
  return out;
}

Json TrainerState::to_json() const {
  Json j = {{"stage", stage}, {"step", step}};
  if (finished) j["finished"] = true;
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  j["config"] = config;
  return j;
}

TrainerState TrainerState::read(const std::string& checkpoint_dir) {
  const std::string path = join_path(checkpoint_dir, "trainer_state.json");
  const Json j = read_json_file(path);
  if (!j.is_object()) fail(ErrorKind::kCorrupt, path, ": expected a JSON object");
  TrainerState s;
  auto bad = [&](const char* key, const char* want) {
    fail(ErrorKind::kCorrupt, path, ": \"", key, "\" must be ", want,
         "; the checkpoint is damaged: delete it (and point checkpoints/latest at an older one) to resume");
  };
  if (!j.contains("stage") || !j["stage"].is_string()) bad("stage", "a string");
  s.stage = j["stage"].get<std::string>();
  const char* step_key = j.contains("step") ? "step" : "iteration";
  if (!j.contains(step_key) || !j[step_key].is_number_integer() || j[step_key].get<int64_t>() < 0) {
    bad("step", "a whole number of steps done");
  }
  s.step = j[step_key].get<int64_t>();
  for (const char* key : {"finished", "done"}) {
    if (!j.contains(key)) continue;
    if (!j[key].is_boolean()) bad(key, "true or false");
    s.finished = s.finished || j[key].get<bool>();
  }
  if (j.contains("config")) {
    if (!j["config"].is_object()) bad("config", "an object");
    s.config = j["config"];
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool core = false;
    for (const char* k : kCoreKeys) core = core || it.key() == k;
    if (!core) s.extra[it.key()] = it.value();
  }
  return s;
}

double TrainerState::number(const char* key, double fallback) const {
  if (!extra.contains(key) || extra[key].is_null()) return fallback;
  if (!extra[key].is_number()) fail(ErrorKind::kCorrupt, "trainer_state.json: \"", key, "\" must be a number");
  return extra[key].get<double>();
}

int64_t TrainerState::integer(const char* key, int64_t fallback) const {
  if (!extra.contains(key) || extra[key].is_null()) return fallback;
  if (!extra[key].is_number_integer()) fail(ErrorKind::kCorrupt, "trainer_state.json: \"", key, "\" must be an integer");
  return extra[key].get<int64_t>();
}

TrainingRun::TrainingRun(std::string stage, const std::string& out_dir, const Json& config, const RunSettings& settings,
                         const ResumeRules& rules, const DistInfo& dist)
    : stage_(std::move(stage)),
      dir_(out_dir, dist.is_main()),
      settings_(settings),
      dist_(dist),
      config_(config),
      device_(parse_device(settings.device)),
      compute_dtype_(parse_precision(settings.precision, "train.precision")) {
  if (auto latest = latest_checkpoint(out_dir)) {
    TrainerState state = TrainerState::read(*latest);
    if (!(state.finished && rules.restart_finished)) resume_ = Resume{*latest, std::move(state)};
  }
  if (resume_) {
    // The checkpoint's own config is what its weights were trained with.
    Json old = resume_->state.config;
    if (old.empty() && path_exists(dir_.file("config.toml"))) old = toml_file_to_json(dir_.file("config.toml"));
    const ConfigChanges changes = config_changes(old, config, rules);
    if (!changes.refused.empty()) {
      fail(ErrorKind::kConfig, "the run folder '", out_dir, "' holds a ", stage_, " run at step ", resume_->state.step,
           " with a different setting: ", changes.refused,
           ". Resuming would mix two runs: choose another out_dir, or delete the folder to start over.");
    }
    if (dist.is_main()) {
      std::ostringstream list;
      for (const auto& c : changes.other) list << "\n  " << c << " (applies from step " << resume_->state.step + 1 << ")";
      for (const auto& c : changes.carried) list << "\n  " << c << " (not applied: the run's saved value continues)";
      if (!changes.other.empty() || !changes.carried.empty()) log_info("note: config changed on resume:", list.str());
    }
  }
  if (dist.is_main()) write_file_atomic(dir_.file("config.toml"), json_to_toml(config));
  threads_ = set_torch_threads(settings.threads);
}

TrainingRun::~TrainingRun() = default;

void TrainingRun::start(std::vector<NamedParameter> params, int64_t start_step) {
  if (resume_) log_info(stage_, ": resuming from ", resume_->dir, " at step ", start_step);
  dir_.open_metrics(start_step);
  broadcast_parameters(dist_, params);
  params_ = params;
  sync_ = std::make_unique<GradientSync>(dist_, std::move(params));
}

TrainingRun::StepDone TrainingRun::finish_step(AdamW& optimizer, const ScheduleConfig& schedule, int64_t step,
                                               int64_t total, double grad_clip) {
  sync().finish();
  StepDone out;
  out.grad_norm = clip_grad_norm(params_, grad_clip);
  out.lr = learning_rate(schedule, step, total);
  optimizer.step(out.lr);
  optimizer.zero_grad();
  return out;
}

GradientSync& TrainingRun::sync() {
  RLHF_CHECK(sync_ != nullptr, "TrainingRun::sync() before start()");
  return *sync_;
}

bool TrainingRun::checkpoint_due(int64_t done, int64_t total) const {
  return done == total || (settings_.checkpoint_interval > 0 && done % settings_.checkpoint_interval == 0);
}

TrainerState TrainingRun::state(int64_t step, Json extra, bool finished) const {
  TrainerState s;
  s.stage = stage_;
  s.step = step;
  s.finished = finished;
  s.config = config_;
  s.extra = std::move(extra);
  return s;
}

std::string TrainingRun::commit(int64_t step, bool best, const std::function<void(const std::string& folder)>& write) {
  if (!dist_.is_main()) return "";
  const std::string name = checkpoint_name(step);
  const std::string folder = dir_.file("checkpoints/" + name);
  write(folder);
  mark_checkpoint(dir_.path(), name);
  if (best) mark_checkpoint(dir_.path(), name, "best");
  prune_checkpoints(dir_.path(), settings_.keep_checkpoints);
  return folder;
}

void TrainingRun::finish() { barrier(dist_); }

}  // namespace rlhf

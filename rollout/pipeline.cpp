#include "rollout/pipeline.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include <torch/version.h>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/runtime.h"
#include "common/version.h"
#include "policy/checkpoint.h"
#include "rollout/stage_fingerprint.h"
#include "train/run_dir.h"
#include "train/runtime.h"

namespace rlhf {
namespace {

const std::vector<std::string> kStages = {"pretrain", "sft", "candidates", "label", "rm",
                                          "ppo",      "dpo", "grpo",       "rloo",  "compare"};
// The stages that train a policy from the SFT model; the comparison takes
// those the run lists.
const std::vector<std::string> kPolicyStages = {"ppo", "dpo", "grpo", "rloo"};

std::vector<std::string> listed_policy_stages(const PipelineConfig& c) {
  std::vector<std::string> out;
  for (const std::string& s : kPolicyStages) {
    if (std::find(c.stages.begin(), c.stages.end(), s) != c.stages.end()) out.push_back(s);
  }
  return out;
}

std::string marker(const PipelineConfig& c, const std::string& stage) {
  return join_path(c.out_dir, "stages/" + stage + ".done");
}

std::string fingerprint_file(const PipelineConfig& c, const std::string& stage) {
  return join_path(c.out_dir, "stages/" + stage + ".fingerprint.json");
}

// The stages whose output each stage reads.
std::vector<std::string> upstream_stages(const PipelineConfig& c, const std::string& stage) {
  static const std::map<std::string, std::vector<std::string>> kUp = {
      {"pretrain", {}},          {"sft", {"pretrain"}},     {"candidates", {"sft"}}, {"label", {"candidates"}},
      {"rm", {"sft", "label"}},  {"ppo", {"sft", "rm"}},    {"dpo", {"sft", "label"}}, {"grpo", {"sft", "rm"}},
      {"rloo", {"sft", "rm"}}};
  if (stage != "compare") return kUp.at(stage);
  std::vector<std::string> up = listed_policy_stages(c);
  up.push_back("sft");
  up.push_back("rm");
  return up;
}

// What each stage writes, under out_dir. Candidates and labels share the
// label store, so running either again moves the store (and both) aside.
std::vector<std::string> stage_outputs(const std::string& stage) {
  if (stage == "candidates" || stage == "label") {
    return {"labels.sqlite", "labels.sqlite-wal", "labels.sqlite-shm", "active"};
  }
  return {stage};
}

// Removes the settings that change how fast a stage runs, not what it
// computes, so that a run may resume on another machine: the thread count
// (which changes float rounding only).
void drop_speed_settings(Json& j) {
  if (!j.is_object()) return;
  j.erase("threads");
  for (auto& [key, value] : j.items()) drop_speed_settings(value);
}

// A stage's settings as its fingerprint sees them.
Json stage_settings(const PipelineConfig& c, const std::string& stage) {
  Json j;
  if (stage == "pretrain") j = config_to_json(c.pretrain);
  else if (stage == "sft") j = config_to_json(c.sft);
  else if (stage == "candidates") j = config_to_json(c.candidates);
  else if (stage == "label") {
    j = Json{{"rater", c.simulated_rater}, {"simulated", config_to_json(c.label)}};
    if (c.label_selection != "all") j["active"] = config_to_json(c.active);
  }
  else if (stage == "rm") j = config_to_json(c.rm);
  else if (stage == "ppo") j = config_to_json(c.ppo);
  else if (stage == "dpo") j = config_to_json(c.dpo);
  else if (stage == "grpo") j = config_to_json(c.grpo);
  else if (stage == "rloo") j = config_to_json(c.rloo);
  else j = config_to_json(c.compare);
  drop_speed_settings(j);
  return j;
}

std::map<std::string, StageFingerprint> current_fingerprints(const PipelineConfig& c) {
  std::map<std::string, StageFingerprint> out;
  for (const std::string& stage : kStages) {
    StageFingerprint f;
    f.stage = stage;
    f.program = program_version();
    f.config = stage_settings(c, stage);
    f.inputs = input_hashes(f.config, c.out_dir);
    f.upstream = Json::object();
    for (const std::string& up : upstream_stages(c, stage)) f.upstream[up] = out.at(up).hash();
    out[stage] = f;
  }
  return out;
}

// Why the stage's recorded fingerprint differs from `now`; empty when it
// does not, or when the stage never started.
std::vector<std::string> stale_reasons(const PipelineConfig& c, const StageFingerprint& now) {
  const std::string file = fingerprint_file(c, now.stage);
  if (!path_exists(file)) {
    if (path_exists(marker(c, now.stage))) return {"it finished without a fingerprint (an older version of rlhf ran it)"};
    return {};
  }
  const StageFingerprint recorded = StageFingerprint::from_json(read_json_file(file), file);
  if (recorded.hash() == now.hash()) return {};
  std::vector<std::string> why = fingerprint_changes(recorded, now);
  if (why.empty()) why.push_back("its fingerprint changed");
  return why;
}

// The label store's pairs for a stage that trains on them (reward model,
// DPO), split into training and held-out pairs by prompt.
std::pair<std::vector<PreferencePair>, std::vector<PreferencePair>> labelled_pairs(const RewardDataConfig& data,
                                                                                  int64_t seed, int64_t* last_label) {
  labels::LabelStore store(data.preferences);
  return split_by_prompt(labels::store_preferences(store, data.since_label, last_label), data.eval_fraction,
                         static_cast<uint64_t>(seed));
}

std::string utc_stamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y%m%d-%H%M%S", &tm);
  return buf;
}

// Moves a stage's output, done marker and fingerprint into `dest`.
void move_aside(const PipelineConfig& c, const std::string& stage, const std::string& dest) {
  make_dirs(dest);
  std::vector<std::pair<std::string, std::string>> moves;
  for (const std::string& name : stage_outputs(stage)) moves.push_back({join_path(c.out_dir, name), join_path(dest, name)});
  moves.push_back({marker(c, stage), join_path(dest, stage + ".done")});
  moves.push_back({fingerprint_file(c, stage), join_path(dest, stage + ".fingerprint.json")});
  for (const auto& [from, to] : moves) {
    if (!path_exists(from) || path_exists(to)) continue;
    if (std::rename(from.c_str(), to.c_str()) != 0) {
      fail(ErrorKind::kIo, "cannot move ", from, " to ", to, " (", std::strerror(errno), "); move it away by hand");
    }
  }
}

// Finds the stages whose recorded fingerprint differs from now and, as
// on_change says, moves them aside or refuses. Returns the stages moved;
// afterwards every scheduled stage either matches its record or has none.
std::vector<std::string> handle_changed_stages(const PipelineConfig& c,
                                               const std::map<std::string, StageFingerprint>& now) {
  std::map<std::string, std::vector<std::string>> stale;
  for (const std::string& stage : kStages) {
    std::vector<std::string> why = stale_reasons(c, now.at(stage));
    if (!why.empty()) stale[stage] = why;
  }
  // The label store holds both the candidates and their labels.
  for (const auto& [a, b] : {std::pair<std::string, std::string>{"candidates", "label"}, {"label", "candidates"}}) {
    if (stale.count(a) && !stale.count(b) && (path_exists(marker(c, b)) || path_exists(fingerprint_file(c, b)))) {
      stale[b] = {"it shares the label store with " + a + ", which runs again"};
    }
  }
  if (stale.empty()) return {};
  const auto scheduled = [&](const std::string& s) { return std::find(c.stages.begin(), c.stages.end(), s) != c.stages.end(); };
  // Stages whose output a scheduled stage reads, directly or not.
  std::set<std::string> read;
  for (auto it = kStages.rbegin(); it != kStages.rend(); ++it) {
    if (scheduled(*it) || read.count(*it)) {
      for (const std::string& up : upstream_stages(c, *it)) read.insert(up);
    }
  }
  std::string report;
  for (const std::string& stage : kStages) {
    if (!stale.count(stage)) continue;
    if (!scheduled(stage) && !read.count(stage)) {
      log_info("== ", stage, ": made from other inputs than now; not in pipeline.stages, so left as it is");
      stale.erase(stage);
      continue;
    }
    report += "\n  " + stage + ":";
    for (const auto& why : stale[stage]) report += "\n    - " + why;
    if (!scheduled(stage)) {
      fail(ErrorKind::kConfig, "pipeline: stage ", stage, " in ", c.out_dir, " was made from other inputs than now, ",
           "and a stage in pipeline.stages reads it:", report, "\nAdd it to pipeline.stages, or start a new out_dir.");
    }
  }
  if (stale.empty()) return {};
  if (c.on_change == "refuse") {
    fail(ErrorKind::kConfig, "pipeline: these stages in ", c.out_dir, " were made from other inputs than now:", report,
         "\nRun with --on_change=rerun to move their output to ", join_path(c.out_dir, "stale/"),
         " and run them again, or start a new out_dir.");
  }
  const std::string dest = join_path(c.out_dir, "stale/" + utc_stamp());
  for (const std::string& stage : kStages) {
    if (!stale.count(stage)) continue;
    std::string why;
    for (const auto& w : stale[stage]) why += (why.empty() ? "" : "; ") + w;
    log_info("== ", stage, ": inputs changed since it ran (", why, "); its output moves to ", dest, " and it runs again");
    move_aside(c, stage, dest);
  }
  std::vector<std::string> moved;
  for (const auto& entry : stale) moved.push_back(entry.first);
  return moved;
}

// "auto" as "bf16" where the CPU has native bf16 and "fp32" elsewhere; any
// other value as it is.
std::string resolve_auto_precision(const std::string& value) {
  if (value != "auto") return value;
  return cpu_has_native_bf16() ? "bf16" : "fp32";
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
  c.dpo.out_dir = in("dpo");
  c.dpo.policy = in("sft");
  c.dpo.data.preferences = in("labels.sqlite");
  for (GrpoConfig* g : {&c.grpo, &c.rloo}) {
    g->out_dir = in(g == &c.grpo ? "grpo" : "rloo");
    g->policy = in("sft");
    g->reward_model = in("rm");
  }
  c.compare.policies.clear();
  c.compare.names.clear();
  for (const std::string& s : listed_policy_stages(c)) {
    c.compare.policies.push_back(in(s));
    c.compare.names.push_back(s);
  }
  c.compare.policies.push_back(in("sft"));
  c.compare.names.push_back("sft");
  c.compare.reward_model = in("rm");
  c.compare.reference = in("sft");
  c.compare.out = in("compare");
  if (c.seed != 0) {
    const auto derive = [&](uint64_t stage) {
      return static_cast<int64_t>(mix_seed({static_cast<uint64_t>(c.seed), stage}) >> 33);
    };
    c.pretrain.train.seed = derive(1);
    c.sft.train.seed = derive(2);
    c.candidates.seed = derive(3);
    c.label.seed = derive(4);
    c.rm.train.seed = derive(5);
    c.ppo.train.seed = derive(6);
    c.ppo.validation.seed = derive(7);
    c.compare.sampling.seed = derive(8);
    c.dpo.train.seed = derive(9);
    c.grpo.train.seed = derive(10);
    c.rloo.train.seed = derive(11);
    c.grpo.validation.seed = c.rloo.validation.seed = c.ppo.validation.seed;
    c.active.seed = derive(12);
  }
  c.sampling_weights = resolve_auto_precision(c.sampling_weights);
  c.precision = resolve_auto_precision(c.precision);
  if (!c.sampling_weights.empty()) {
    sampling_weights_dtype(c.sampling_weights, "pipeline.sampling_weights");
    for (std::string* w : {&c.candidates.weights, &c.ppo.rollout.weights, &c.ppo.validation.weights,
                           &c.grpo.rollout.weights, &c.grpo.validation.weights, &c.rloo.rollout.weights,
                           &c.rloo.validation.weights, &c.compare.sampling.weights}) {
      *w = c.sampling_weights;
    }
  }
  if (!c.precision.empty()) {
    parse_precision(c.precision, "pipeline.precision");
    for (std::string* p : {&c.pretrain.train.precision, &c.sft.train.precision, &c.rm.train.precision,
                           &c.ppo.train.precision, &c.dpo.train.precision, &c.grpo.train.precision,
                           &c.rloo.train.precision, &c.active.rm.train.precision}) {
      *p = c.precision;
    }
  }
  if (c.threads > 0) {
    for (int* t : {&c.pretrain.train.threads, &c.sft.train.threads, &c.candidates.threads, &c.active.rm.train.threads,
                   &c.rm.train.threads, &c.ppo.train.threads, &c.dpo.train.threads, &c.grpo.train.threads,
                   &c.rloo.train.threads, &c.compare.threads}) {
      *t = c.threads;
    }
  }
  if (!c.device.empty()) {
    // An unknown name, or CUDA where there is none, fails here, before any stage.
    try {
      parse_device(c.device);
    } catch (const std::exception& e) {
      fail(ErrorKind::kConfig, "pipeline.device: ", e.what());
    }
    for (std::string* d : {&c.pretrain.train.device, &c.sft.train.device, &c.rm.train.device, &c.ppo.train.device,
                           &c.dpo.train.device, &c.grpo.train.device, &c.rloo.train.device,
                           &c.active.rm.train.device}) {
      *d = c.device;
    }
  }
  // Active labelling labels for the reward model stage: its rater, its
  // noise, its starting point and held-out prompts.
  c.active.db = in("labels.sqlite");
  c.active.out_dir = in("active");
  c.active.rater = c.simulated_rater;
  c.active.simulated = c.label;
  c.active.rm.init_from = in("sft");
  c.active.rm.train.seed = c.rm.train.seed;
  c.active.eval_fraction = c.rm.data.eval_fraction;
  return c;
}

Json run_pipeline(const PipelineConfig& config) {
  const PipelineConfig c = wire_pipeline(config);
  for (const auto& s : c.stages) {
    if (std::find(kStages.begin(), kStages.end(), s) == kStages.end()) {
      fail(ErrorKind::kConfig, "pipeline.stages: unknown stage '", s,
           "'; stages are pretrain, sft, candidates, label, rm, ppo, dpo, grpo, rloo, compare");
    }
  }
  if (c.on_change != "rerun" && c.on_change != "refuse") {
    fail(ErrorKind::kConfig, "pipeline.on_change: '", c.on_change, "' is neither \"rerun\" nor \"refuse\"");
  }
  if (c.label_selection != "all" && c.label_selection != "active") {
    fail(ErrorKind::kConfig, "pipeline.label_selection: '", c.label_selection, "' is neither \"all\" nor \"active\"");
  }
  if (c.label_selection == "active") labels::validate_active_config(c.active);
  make_dirs(join_path(c.out_dir, "stages"));
  const std::map<std::string, StageFingerprint> fingerprints = current_fingerprints(c);
  const std::vector<std::string> moved = handle_changed_stages(c, fingerprints);
  write_file_atomic(join_path(c.out_dir, "config.toml"), json_to_toml(config_to_json(c)));
  const std::string summary_path = join_path(c.out_dir, "summary.json");
  Json summary = path_exists(summary_path) ? read_json_file(summary_path) : Json::object();
  for (const std::string& stage : moved) summary.erase(stage);  // its figures went with its output
  summary["program"] = program_version();
  // Figures depend on the machine's rounding as well as on the seeds.
  summary["machine"] = cpu_description() + ", " + std::to_string(available_cpus()) + " CPUs, LibTorch " +
                       TORCH_VERSION + ", " + process_environment_summary();

  // Stages run in their fixed order, whatever order the list has.
  for (const std::string& stage : kStages) {
    if (std::find(c.stages.begin(), c.stages.end(), stage) == c.stages.end()) continue;
    const StageFingerprint& fp = fingerprints.at(stage);
    if (path_exists(marker(c, stage))) {
      log_info("== ", stage, ": done already with the same inputs (fingerprint ", fp.hash(), ")");
      continue;
    }
    log_info("== ", stage, " (fingerprint ", fp.hash(), ")");
    write_file_atomic(fingerprint_file(c, stage), fp.to_json().dump(2));
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
      result = {{"prompts", r.prompts}, {"candidates", r.candidates}, {"comparisons", r.comparisons}, {"times", r.times}};
    } else if (stage == "label" && c.label_selection == "active") {
      const std::vector<labels::CurvePoint> curve = labels::run_active_labelling(c.active);
      labels::LabelStore store(c.candidates.db);
      const size_t measuring = labels::label_held_out(store, c.active);
      Json points = Json::array();
      for (const auto& p : curve) points.push_back(p.to_json());
      result = {{"labels", curve.back().labels + static_cast<int64_t>(measuring)}, {"selected", curve.back().labels},
                {"held_out_labels", measuring}, {"strategy", c.active.strategy}, {"curve", points},
                {"expected_self_agreement", expected_self_agreement(c.label)}};
    } else if (stage == "label") {
      labels::LabelStore store(c.candidates.db);
      const auto r = labels::label_simulated(store, c.simulated_rater, c.label);
      result = {{"labels", r.labelled}, {"expected_self_agreement", expected_self_agreement(c.label)}};
    } else if (stage == "rm") {
      int64_t last = 0;
      auto [train, eval] = labelled_pairs(c.rm.data, c.rm.train.seed, &last);
      const RewardTrainResult r = run_reward_training(c.rm, train, eval, last);
      result = {{"checkpoint", r.checkpoint}, {"eval", r.eval.to_json()}};
    } else if (stage == "ppo" || stage == "grpo" || stage == "rloo") {
      const OnlineResult r = stage == "ppo" ? run_ppo(c.ppo) : run_grpo(stage == "grpo" ? c.grpo : c.rloo);
      Json validations = Json::array();
      for (const auto& v : r.validations) validations.push_back(v.to_json());
      result = {{"checkpoint", r.checkpoint}, {"best_checkpoint", r.best_checkpoint}, {"validations", validations}};
    } else if (stage == "dpo") {
      int64_t last = 0;
      auto [train, eval] = labelled_pairs(c.dpo.data, c.dpo.train.seed, &last);
      const DpoResult r = run_dpo(c.dpo, train, eval, last);
      result = {{"checkpoint", r.checkpoint}, {"eval", r.eval.to_json("")}};
    } else if (stage == "compare") {
      const CompareReport r = run_compare(c.compare);
      result = r.to_json();
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result["seconds"] = seconds;
    result["fingerprint"] = fp.hash();
    result["program"] = fp.program;
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
  summary["seed"] = c.seed;
  if (!c.precision.empty()) summary["precision"] = c.precision;
  if (!c.sampling_weights.empty()) summary["sampling_weights"] = c.sampling_weights;
  write_file_atomic(summary_path, summary.dump(2));
  write_file_atomic(join_path(c.out_dir, "report.md"), pipeline_report(summary));
  return summary;
}

namespace {

// "-" for a figure a summary did not record.
std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, v);
  return buf;
}

std::string percent(double v) { return std::isfinite(v) ? fixed(100 * v, 1) + "%" : "-"; }

// Bound i (0 low, 1 high) of a comparison's 95% interval, or NaN when a summary from an older or hand-edited
// run lacks it: reading a missing key of a const json is undefined behaviour, not an error.
double interval_bound(const Json& comparison, size_t i) {
  const auto it = comparison.find("ci95");
  if (it == comparison.end() || !it->is_array() || it->size() <= i || !(*it)[i].is_number()) return std::nan("");
  return (*it)[i].get<double>();
}

std::string with_commas(int64_t n) {
  std::string s = std::to_string(n);
  for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3) s.insert(static_cast<size_t>(i), ",");
  return s;
}

// One line of what a stage produced, from its summary entry.
std::string stage_result(const std::string& stage, const Json& r) {
  if (stage == "pretrain" && r.contains("val_loss")) {
    const double loss = r["val_loss"];
    return "validation loss " + fixed(loss, 3) + " (perplexity " + fixed(std::exp(loss), 1) + ")";
  }
  if (stage == "sft" && r.contains("best_val_loss")) return "best validation loss " + fixed(r["best_val_loss"], 3);
  if (stage == "candidates") {
    return with_commas(r.value("candidates", 0)) + " replies to " + with_commas(r.value("prompts", 0)) + " prompts, " +
           with_commas(r.value("comparisons", 0)) + " comparisons";
  }
  if (stage == "label" && r.contains("strategy")) {
    return with_commas(r.value("selected", 0)) + " simulated labels chosen by " + r.value("strategy", "") + " + " +
           with_commas(r.value("held_out_labels", 0)) + " on held-out prompts";
  }
  if (stage == "label") return with_commas(r.value("labels", 0)) + " simulated labels";
  if (stage == "rm" && r.contains("eval")) {
    const Json& e = r["eval"];
    return "held-out accuracy " + percent(e.value("gold_accuracy", 0.0)) + " vs gold (" +
           with_commas(e.value("gold_pairs", 0)) + " pairs), " + percent(e.value("label_accuracy", 0.0)) +
           " vs labels (" + with_commas(e.value("pairs", 0)) + ")";
  }
  if (stage == "dpo" && r.contains("eval")) {
    const Json& e = r["eval"];
    return "held-out pairs: accuracy " + percent(e.value("rewards/accuracies", 0.0)) + ", margin " +
           fixed(e.value("rewards/margins", 0.0), 3) + ", log-probs chosen " + fixed(e.value("logps/chosen", 0.0), 2) +
           " rejected " + fixed(e.value("logps/rejected", 0.0), 2);
  }
  if ((stage == "ppo" || stage == "grpo" || stage == "rloo") && r.contains("validations") && !r["validations"].empty()) {
    std::string gold, kl;
    for (const Json& v : r["validations"]) {
      if (v.contains("gold")) gold += (gold.empty() ? "" : ", ") + fixed(v["gold"], 2);
      kl += (kl.empty() ? "" : ", ") + fixed(v["kl"], 1);
    }
    return "validation gold " + gold + "; KL " + kl + " (iterations " +
           std::to_string(r["validations"].front().value("iteration", 0)) + " to " +
           std::to_string(r["validations"].back().value("iteration", 0)) + ")";
  }
  if (stage == "compare" && r.contains("policies")) {
    std::string out;
    for (const Json& p : r["policies"]) {
      out += (out.empty() ? "" : "; ") + p.value("name", std::string("?"));
      if (p.contains("mean_gold")) out += " mean gold " + fixed(p["mean_gold"], 2);
    }
    return out;
  }
  return "";
}

}  // namespace

std::string pipeline_report(const Json& s) {
  std::string md = "Program " + s.value("program", std::string("(unknown)")) + ", pipeline seed " +
                   std::to_string(s.value("seed", int64_t{0})) + " (0: each stage's configured seed)";
  if (s.contains("precision")) md += "; training in " + s["precision"].get<std::string>();
  if (s.contains("sampling_weights")) md += "; sampling in " + s["sampling_weights"].get<std::string>();
  md += ".";
  if (s.contains("machine")) md += " Machine: " + s["machine"].get<std::string>() + ".";
  md += "\n\n";
  md += "| stage | time | result |\n|---|---:|---|\n";
  for (const std::string& stage : kStages) {
    if (!s.contains(stage) || !s[stage].is_object()) continue;
    const Json& r = s[stage];
    md += "| " + stage + " | " + format_duration(r.value("seconds", 0.0)) + " | " + stage_result(stage, r) + " |\n";
  }
  md += "| total | " + format_duration(s.value("total_seconds", 0.0)) + " | |\n";
  if (s.contains("compare") && s["compare"].contains("pairwise")) {
    md += "\n";
    for (const Json& p : s["compare"]["pairwise"]) {
      md += "- " + p.value("a", std::string()) + " vs " + p.value("b", std::string()) + " by " +
            p.value("judge", std::string()) + ": " + p.value("a", std::string()) + " wins " +
            percent(p.value("a_win_rate", 0.0)) + " (ties half), 95% interval [" + percent(interval_bound(p, 0)) +
            ", " + percent(interval_bound(p, 1)) + "], " + std::to_string(p.value("wins", 0)) + " / " +
            std::to_string(p.value("ties", 0)) + " / " + std::to_string(p.value("losses", 0)) + " of " +
            std::to_string(p.value("n", 0)) + " prompts\n";
    }
  }
  if (s.contains("ppo") && s["ppo"].contains("validations") && !s["ppo"]["validations"].empty()) {
    const Json& last = s["ppo"]["validations"].back();
    md += "- PPO at its last validation: mean KL to the SFT reference " + fixed(last.value("kl", 0.0), 2) +
          " nats per reply, mean length " + fixed(last.value("length", 0.0), 1) + " tokens\n";
  }
  return md;
}

namespace {

// The PPO-vs-SFT comparison by gold in a run's summary, or null.
const Json* ppo_vs_sft_by_gold(const Json& s) {
  if (!s.contains("compare") || !s["compare"].contains("pairwise")) return nullptr;
  for (const Json& p : s["compare"]["pairwise"]) {
    if (p.value("a", std::string()) == "ppo" && p.value("b", std::string()) == "sft" &&
        p.value("judge", std::string()) == "gold") {
      return &p;
    }
  }
  return nullptr;
}

double policy_mean_gold(const Json& s, const std::string& name) {
  if (!s.contains("compare") || !s["compare"].contains("policies")) return std::nan("");
  for (const Json& p : s["compare"]["policies"]) {
    if (p.value("name", std::string()) == name) return p.value("mean_gold", std::nan(""));
  }
  return std::nan("");
}

// "mean 85.2, range 84.1-86.0" over the finite values, in the given scale.
std::string mean_and_range(const std::vector<double>& values, double scale, int digits) {
  std::vector<double> v;
  for (double x : values) {
    if (std::isfinite(x)) v.push_back(x * scale);
  }
  if (v.empty()) return "not measured";
  double sum = 0;
  for (double x : v) sum += x;
  const auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return "mean " + fixed(sum / static_cast<double>(v.size()), digits) + ", range " + fixed(*lo, digits) + "-" +
         fixed(*hi, digits) + " (" + std::to_string(v.size()) + " runs)";
}

}  // namespace

std::string seeds_report(const std::vector<std::pair<std::string, Json>>& runs, const HeadlineBars& bars) {
  const double nan = std::nan("");
  std::vector<double> rm, win, kl;
  std::vector<std::string> rm_misses, ppo_misses;
  std::set<std::string> programs;
  std::string md = "| run | seed | RM vs gold | PPO wins vs SFT (gold) | 95% interval | wins / ties / losses | "
                   "mean gold PPO / SFT | KL (nats/reply) |\n|---|---:|---:|---:|---|---|---|---:|\n";
  for (const auto& [name, s] : runs) {
    programs.insert(s.value("program", std::string("(unknown)")));
    md += "| " + name + " | " + std::to_string(s.value("seed", int64_t{0})) + " | ";
    double rm_gold = nan;
    if (s.contains("rm") && s["rm"].contains("eval")) {
      const Json& e = s["rm"]["eval"];
      rm_gold = e.value("gold_accuracy", nan);
      md += percent(rm_gold) + " (" + with_commas(e.value("gold_pairs", 0)) + " pairs)";
    } else {
      md += "-";
    }
    rm.push_back(rm_gold);
    if (!(rm_gold >= bars.rm_gold_accuracy)) rm_misses.push_back(name);
    md += " | ";
    const Json* p = ppo_vs_sft_by_gold(s);
    if (p != nullptr) {
      const double rate = p->value("a_win_rate", nan), low = interval_bound(*p, 0);
      win.push_back(rate);
      if (!(rate >= bars.ppo_win_rate && low > bars.ppo_interval_low)) ppo_misses.push_back(name);
      md += percent(rate) + " | [" + percent(low) + ", " + percent(interval_bound(*p, 1)) + "] | " +
            std::to_string(p->value("wins", 0)) + " / " + std::to_string(p->value("ties", 0)) + " / " +
            std::to_string(p->value("losses", 0)) + " | " + fixed(policy_mean_gold(s, "ppo"), 2) + " / " +
            fixed(policy_mean_gold(s, "sft"), 2) + " | ";
    } else {
      win.push_back(nan);
      ppo_misses.push_back(name);
      md += "- | - | - | - | ";
    }
    double last_kl = nan;
    if (s.contains("ppo") && s["ppo"].contains("validations") && !s["ppo"]["validations"].empty()) {
      last_kl = s["ppo"]["validations"].back().value("kl", nan);
    }
    kl.push_back(last_kl);
    md += fixed(last_kl, 2) + " |\n";
  }
  md += "\n- RM vs gold: " + mean_and_range(rm, 100, 1) + "\n";
  md += "- PPO win rate vs SFT by gold: " + mean_and_range(win, 100, 1) + "\n";
  md += "- KL at PPO's last validation: " + mean_and_range(kl, 1, 2) + "\n";
  const auto missed = [&](const std::vector<std::string>& misses) {
    if (misses.empty()) return "met by all " + std::to_string(runs.size()) + " runs";
    std::string names;
    for (const std::string& n : misses) names += (names.empty() ? "" : ", ") + n;
    return "missed by " + std::to_string(misses.size()) + " of " + std::to_string(runs.size()) + " (" + names + ")";
  };
  md += "- Bar: RM >= " + percent(bars.rm_gold_accuracy) + " vs gold: " + missed(rm_misses) + "\n";
  md += "- Bar: PPO >= " + percent(bars.ppo_win_rate) + " vs SFT by gold, interval's low end above " +
        percent(bars.ppo_interval_low) + ": " + missed(ppo_misses) + "\n";
  std::string names;
  for (const std::string& p : programs) names += (names.empty() ? "" : ", ") + p;
  md += "- Program" + std::string(programs.size() > 1 ? "s (the runs differ!): " : ": ") + names + "\n";
  return md;
}

}  // namespace rlhf

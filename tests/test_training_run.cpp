// The scaffold every training loop runs on: resume rules, trainer state,
// checkpoint bookkeeping.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/fs.h"
#include "test_util.h"
#include "train/checkpoints.h"
#include "train/training_run.h"

namespace rlhf {
namespace {

using test::error_of;
using test::TempDir;

Json config(double lr, int64_t seed, const std::string& data, double kl = 0.1) {
  return {{"out_dir", "x"},
          {"data", {{"train_file", data}}},
          {"kl", {{"coef", kl}}},
          {"train", {{"lr", lr}, {"seed", seed}}}};
}

// A checkpoint folder with weights and a trainer state, as a stage writes one.
void fake_checkpoint(TrainingRun& run, int64_t step, bool best, bool finished = false) {
  run.commit(step, best, [&](const std::string& folder) {
    make_dirs(folder);
    write_file_atomic(join_path(folder, "model.safetensors"), "weights");
    write_file_atomic(join_path(folder, "trainer_state.json"),
                      run.state(step, {{"best_loss", 0.5}, {"kl_coef", 0.2}}, finished).to_json().dump());
  });
}

TEST(ResumeRules, FixedSectionsAndKeysAndTheSeedRefuseCarriedAndOtherChangesAreSorted) {
  ResumeRules rules = ResumeRules::fixing({"data"});
  rules.carried = {"kl.coef"};
  ConfigChanges same = config_changes(config(1e-3, 1, "a"), config(1e-3, 1, "a"), rules);
  EXPECT_TRUE(same.refused.empty() && same.carried.empty() && same.other.empty());

  ConfigChanges data = config_changes(config(1e-3, 1, "a"), config(1e-3, 1, "b"), rules);
  EXPECT_EQ(data.refused, "data.train_file (\"a\" -> \"b\")");

  // The seed is fixed for every stage, without being named.
  EXPECT_NE(config_changes(config(1e-3, 1, "a"), config(1e-3, 2, "a"), rules).refused.find("train.seed"),
            std::string::npos);

  ConfigChanges free = config_changes(config(1e-3, 1, "a", 0.1), config(2e-3, 1, "a", 0.3), rules);
  EXPECT_TRUE(free.refused.empty());
  ASSERT_EQ(free.carried.size(), 1u);
  EXPECT_EQ(free.carried[0], "kl.coef (0.1 -> 0.3)");
  ASSERT_EQ(free.other.size(), 1u);
  EXPECT_EQ(free.other[0], "train.lr (0.001 -> 0.002)");

  // A dotted name fixes that key only; "data" does not fix "data_mix".
  ConfigChanges key = config_changes(config(1e-3, 1, "a"), config(2e-3, 1, "a"), ResumeRules::fixing({"train.lr"}));
  EXPECT_NE(key.refused.find("train.lr"), std::string::npos);
  Json a = {{"data_mix", 1}, {"train", {{"seed", 1}}}}, b = {{"data_mix", 2}, {"train", {{"seed", 1}}}};
  EXPECT_TRUE(config_changes(a, b, ResumeRules::fixing({"data"})).refused.empty());
}

TEST(TrainingRun, ResumesFromTheLatestCheckpointAndRefusesAChangedFixedSettingBeforeAnythingLoads) {
  TempDir tmp("training-run");
  const std::string out = tmp.file("run");
  RunSettings settings;
  settings.keep_checkpoints = 2;
  {
    TrainingRun run("sft", out, config(1e-3, 1, "a"), settings, ResumeRules::fixing({"data"}), {});
    EXPECT_FALSE(run.resume().has_value());
    EXPECT_EQ(run.resume_step(), 0);
    fake_checkpoint(run, 1, /*best=*/true);
    fake_checkpoint(run, 2, false);
    fake_checkpoint(run, 3, false);
    fake_checkpoint(run, 4, false);
  }
  // keep_checkpoints = 2 newest, and the best besides them.
  EXPECT_TRUE(path_exists(join_path(out, "checkpoints/step-0000001")));
  EXPECT_FALSE(path_exists(join_path(out, "checkpoints/step-0000002")));
  EXPECT_TRUE(path_exists(join_path(out, "checkpoints/step-0000003")));
  EXPECT_EQ(resolve_checkpoint(out, /*prefer_best=*/true), join_path(out, "checkpoints/step-0000001"));

  // Another learning rate may change: the run resumes at step 4 with its state.
  {
    TrainingRun run("sft", out, config(2e-3, 1, "a"), settings, ResumeRules::fixing({"data"}), {});
    ASSERT_TRUE(run.resume().has_value());
    EXPECT_EQ(run.resume_step(), 4);
    EXPECT_EQ(run.resume()->dir, join_path(out, "checkpoints/step-0000004"));
    EXPECT_EQ(run.resume()->state.stage, "sft");
    EXPECT_DOUBLE_EQ(run.resume()->state.number("best_loss", 9.0), 0.5);
    EXPECT_DOUBLE_EQ(run.resume()->state.number("absent", 9.0), 9.0);
    EXPECT_EQ(run.resume()->state.config["train"]["lr"], 1e-3);  // what the weights were trained with
  }
  EXPECT_EQ(toml_file_to_json(join_path(out, "config.toml"))["train"]["lr"], 2e-3);

  // Other data would splice two runs: refused, naming the folder and the key;
  // config.toml is left as it was.
  const std::string err = error_of([&] {
    TrainingRun run("sft", out, config(2e-3, 1, "b"), settings, ResumeRules::fixing({"data"}), {});
  });
  EXPECT_NE(err.find(out), std::string::npos) << err;
  EXPECT_NE(err.find("data.train_file"), std::string::npos) << err;
  EXPECT_NE(err.find("another out_dir"), std::string::npos) << err;
  EXPECT_EQ(toml_file_to_json(join_path(out, "config.toml"))["data"]["train_file"], "a");
}

TEST(TrainingRun, AFinishedRunRestartsWhenTheStageSaysSoAndCheckpointsFallDueOnInterval) {
  TempDir tmp("training-run-finished");
  const std::string out = tmp.file("rm");
  RunSettings settings;
  settings.checkpoint_interval = 3;
  ResumeRules rules;
  rules.restart_finished = true;
  {
    TrainingRun run("rm", out, config(1e-3, 1, "a"), settings, rules, {});
    EXPECT_FALSE(run.checkpoint_due(2, 10));
    EXPECT_TRUE(run.checkpoint_due(3, 10));
    EXPECT_TRUE(run.checkpoint_due(10, 10));
    fake_checkpoint(run, 10, true, /*finished=*/true);
  }
  EXPECT_TRUE(TrainerState::read(join_path(out, "checkpoints/step-0000010")).finished);
  // Started again (even with other settings) it trains afresh.
  TrainingRun again("rm", out, config(1e-3, 2, "b"), settings, rules, {});
  EXPECT_FALSE(again.resume().has_value());
  // Without the rule the same folder resumes at its last step.
  TrainingRun resumed("rm", out, config(1e-3, 1, "a"), settings, ResumeRules{}, {});
  EXPECT_EQ(resumed.resume_step(), 10);
}

TEST(TrainerState, ReadsOlderNamesAndNamesTheFileWhenAFieldIsBad) {
  TempDir tmp("trainer-state");
  write_file_atomic(tmp.file("trainer_state.json"),
                    Json{{"stage", "ppo"}, {"iteration", 7}, {"done", true}, {"kl_coef", 0.05}}.dump());
  const TrainerState s = TrainerState::read(tmp.path());
  EXPECT_EQ(s.step, 7);
  EXPECT_TRUE(s.finished);
  EXPECT_DOUBLE_EQ(s.number("kl_coef", 0), 0.05);
  EXPECT_FALSE(s.extra.contains("iteration"));
  // Written back, the state uses today's names and keeps the stage's fields.
  const Json j = s.to_json();
  EXPECT_EQ(j["step"], 7);
  EXPECT_EQ(j["finished"], true);
  EXPECT_EQ(j["kl_coef"], 0.05);

  write_file_atomic(tmp.file("trainer_state.json"), Json{{"stage", "sft"}, {"step", "three"}}.dump());
  const std::string err = error_of([&] { TrainerState::read(tmp.path()); });
  EXPECT_NE(err.find(tmp.file("trainer_state.json")), std::string::npos) << err;
  EXPECT_NE(err.find("\"step\""), std::string::npos) << err;
  write_file_atomic(tmp.file("trainer_state.json"), "{\"stage\": ");
  EXPECT_NE(error_of([&] { TrainerState::read(tmp.path()); }).find("not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace rlhf

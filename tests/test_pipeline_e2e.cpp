// The whole pipeline on the CI config (configs/ci.toml): every stage runs,
// a run killed mid-way continues where it stopped, finished stages are
// skipped while their inputs are the same, a changed setting reruns its
// stage and those after it (or is refused, saying which and why), and the
// reports are written.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/config.h"
#include "common/fs.h"
#include "process_util.h"
#include "test_util.h"

namespace rlhf {
namespace {

TEST(PipelineE2E, RunsEveryStageAndResumesAfterAKill) {
  test::TempDir dir("pipeline");
  const std::string out = dir.file("ci");
  const std::vector<std::string> args = {"pipeline", "--config", "configs/ci.toml", "--out_dir=" + out};

  // Kill the first run once pretraining is done (during SFT).
  const pid_t pid = test::spawn_cli(args, dir.file("first.log"), "", test::source_dir());
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!path_exists(out + "/stages/pretrain.done") && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ::kill(pid, SIGKILL);
  test::wait_exit(pid);
  ASSERT_TRUE(path_exists(out + "/stages/pretrain.done")) << read_file(dir.file("first.log"));
  ASSERT_FALSE(path_exists(out + "/stages/compare.done")) << "the run finished before it could be killed";

  ASSERT_EQ(test::run_cli(args, dir.file("second.log"), "", test::source_dir()), 0) << read_file(dir.file("second.log"));
  const std::string log = read_file(dir.file("second.log"));
  EXPECT_NE(log.find("pretrain: done already"), std::string::npos) << log;

  for (const char* stage : {"pretrain", "sft", "candidates", "label", "rm", "ppo", "compare"}) {
    EXPECT_TRUE(path_exists(out + "/stages/" + stage + ".done")) << stage;
  }
  const Json summary = Json::parse(read_file(out + "/summary.json"));
  EXPECT_GT(summary["label"]["labels"].get<int>(), 0);
  EXPECT_TRUE(summary["rm"]["eval"].contains("gold_accuracy"));
  const Json compare = Json::parse(read_file(out + "/compare/compare.json"));
  ASSERT_EQ(compare["policies"].size(), 2u);
  for (const auto& p : compare["policies"]) {
    EXPECT_GE(p["end_of_turn_rate"].get<double>(), 0.0);
    EXPECT_LE(p["end_of_turn_rate"].get<double>(), 1.0);
    ASSERT_TRUE(p.contains("mean_kl")) << p.dump();
    // The SFT policy is the reference: its KL from itself is zero.
    if (p["name"] == "sft") EXPECT_NEAR(p["mean_kl"].get<double>(), 0.0, 1e-4);
  }
  bool gold_judged = false;
  for (const auto& p : compare["pairwise"]) {
    gold_judged |= p["judge"] == "gold";
    EXPECT_LE(p["ci95"][0].get<double>(), p["a_win_rate"].get<double>());
    EXPECT_GE(p["ci95"][1].get<double>(), p["a_win_rate"].get<double>());
  }
  EXPECT_TRUE(gold_judged);
  EXPECT_NE(read_file(out + "/ppo/validation.md").find("| iteration | KL |"), std::string::npos);
  EXPECT_NE(read_file(out + "/compare/compare.md").find("Head to head"), std::string::npos);

  // Running again does nothing but report.
  ASSERT_EQ(test::run_cli(args, dir.file("third.log"), "", test::source_dir()), 0);
  EXPECT_NE(read_file(dir.file("third.log")).find("compare: done already"), std::string::npos);

  // A changed reward-model setting, refused: nothing runs, nothing moves,
  // and the message names the stage, the setting and the stages it feeds.
  std::vector<std::string> changed = args;
  changed.push_back("--rm.train.epochs=2");
  std::vector<std::string> refuse = changed;
  refuse.push_back("--on_change=refuse");
  EXPECT_NE(test::run_cli(refuse, dir.file("refused.log"), "", test::source_dir()), 0);
  const std::string refused = read_file(dir.file("refused.log"));
  EXPECT_NE(refused.find("rm:"), std::string::npos) << refused;
  EXPECT_NE(refused.find("setting train.epochs: 1.0 -> 2.0"), std::string::npos) << refused;
  EXPECT_NE(refused.find("upstream stage rm changed"), std::string::npos) << refused;
  EXPECT_EQ(refused.find("sft:"), std::string::npos) << refused;
  EXPECT_TRUE(path_exists(out + "/stages/rm.done"));
  EXPECT_FALSE(path_exists(out + "/stale"));

  // The same change, rerun: the stages before rm are reused, rm and the
  // stages that read it run again, and the old ones are kept in stale/.
  ASSERT_EQ(test::run_cli(changed, dir.file("rerun.log"), "", test::source_dir()), 0) << read_file(dir.file("rerun.log"));
  const std::string rerun = read_file(dir.file("rerun.log"));
  for (const char* stage : {"pretrain", "sft", "candidates", "label"}) {
    EXPECT_NE(rerun.find(std::string(stage) + ": done already"), std::string::npos) << stage << "\n" << rerun;
  }
  for (const char* stage : {"rm", "ppo", "compare"}) {
    EXPECT_EQ(rerun.find(std::string(stage) + ": done already"), std::string::npos) << stage << "\n" << rerun;
    EXPECT_NE(rerun.find(std::string("== ") + stage + ": inputs changed"), std::string::npos) << stage;
  }
  bool kept = false;
  for (const std::string& f : list_files(out + "/stale", {".done"})) kept |= f.find("rm.done") != std::string::npos;
  EXPECT_TRUE(kept) << "the old reward model's marker is kept under stale/";
  const Json after = Json::parse(read_file(out + "/summary.json"));
  EXPECT_NE(after["rm"]["fingerprint"], summary["rm"].value("fingerprint", Json()));
  EXPECT_EQ(after["sft"]["fingerprint"], summary["sft"]["fingerprint"]);
}

}  // namespace
}  // namespace rlhf

// rlhf-rater end to end, headless: under Xvfb (Mesa's software renderer) the
// tool opens a local store, takes key presses through ImGui's input (1, 2,
// space, 3, backspace, 4), saves a screenshot, and the labels land in the
// store exactly as a person pressing those keys would leave them.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include "common/fs.h"
#include "label_fixture.h"
#include "test_util.h"

extern char** environ;

using namespace rlhf;

namespace {

int run(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> all = args;
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

uint32_t be32(const std::string& s, size_t at) {
  return (uint32_t(uint8_t(s[at])) << 24) | (uint32_t(uint8_t(s[at + 1])) << 16) | (uint32_t(uint8_t(s[at + 2])) << 8) |
         uint32_t(uint8_t(s[at + 3]));
}

}  // namespace

TEST(RaterHeadless, KeyPressesUnderXvfbLandInTheStoreAndAScreenshotIsSaved) {
  test::TempDir dir("rater-xvfb");
  {
    labels::LabelStore store(dir.file("l.sqlite"));
    test::fill_label_store(store, 6, 1);
  }
  const int rc = run({"xvfb-run", "-a", "-s", "-screen 0 1280x800x24", RLHF_RATER, "--db", dir.file("l.sqlite"),
                      "--rater", "alice", "--script", "1,2,space,3,backspace,4", "--screenshot", dir.file("shot.png")},
                     dir.file("log"));
  ASSERT_EQ(rc, 0) << "xvfb-run (package xvfb, installed by scripts/setup.sh) failed:\n" << read_file(dir.file("log"));

  labels::LabelStore store(dir.file("l.sqlite"));
  const auto ls = store.labels();
  ASSERT_EQ(ls.size(), 3u) << "1, 2 and 4 stay; space skipped; 3 was undone";
  auto winner_as_shown = [&](const labels::Label& l) {
    const auto c = store.comparison(l.comparison_id);
    const int64_t w = l.choice == labels::Choice::kA ? c.candidates[0] : c.candidates[1];
    return w == l.shown_order[0] ? 0 : 1;
  };
  EXPECT_EQ(winner_as_shown(ls[0]), 0) << "key 1: the left reply";
  EXPECT_EQ(winner_as_shown(ls[1]), 1) << "key 2: the right reply";
  EXPECT_EQ(ls[2].choice, labels::Choice::kBothBad) << "key 4 on the task that came back after undo";
  EXPECT_EQ(store.raters().at(0).name, "alice");

  const std::string png = read_file(dir.file("shot.png"));
  ASSERT_GT(png.size(), 24u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(be32(png, 16), 1280u);
  EXPECT_EQ(be32(png, 20), 800u);
  EXPECT_GT(png.size(), 5000u) << "a blank image compresses to almost nothing";
}

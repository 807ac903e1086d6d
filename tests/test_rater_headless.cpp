// rlhf-rater end to end, headless: under Xvfb (Mesa's software renderer) the
// tool opens a local store, takes key presses through ImGui's input (1, 2,
// space, 3, backspace, 4), saves a screenshot, and the labels land in the
// store exactly as a person pressing those keys would leave them.
#include <gtest/gtest.h>

#include "common/fs.h"
#include "label_fixture.h"
#include "process_util.h"
#include "test_util.h"

using namespace rlhf;

namespace {

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
  const pid_t pid = test::spawn_program({"xvfb-run", "-a", "-s", "-screen 0 1280x800x24", RLHF_RATER, "--db",
                                         dir.file("l.sqlite"), "--rater", "alice", "--script", "1,2,space,3,backspace,4",
                                         "--screenshot", dir.file("shot.png")},
                                        dir.file("log"));
  ASSERT_GT(pid, 0) << "xvfb-run is missing: scripts/setup.sh installs it (package xvfb)";
  ASSERT_EQ(test::wait_exit(pid), 0) << "rlhf-rater under xvfb-run failed:\n" << read_file(dir.file("log"));

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

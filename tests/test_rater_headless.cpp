// rlhf-rater end to end, headless: under Xvfb (Mesa's software renderer) the
// tool opens a local store, takes key presses through ImGui's input (1, 2,
// space, 3, backspace, 4), saves a screenshot, and the labels land in the
// store exactly as a person pressing those keys would leave them.
#include <gtest/gtest.h>
#include <stb_image.h>

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

namespace {

struct Image {
  int w = 0, h = 0;
  std::vector<unsigned char> rgba;
};
Image load_png(const std::string& path) {
  Image im;
  int channels = 0;
  unsigned char* data = stbi_load(path.c_str(), &im.w, &im.h, &channels, 4);
  if (data == nullptr) return im;
  im.rgba.assign(data, data + static_cast<size_t>(im.w) * im.h * 4);
  stbi_image_free(data);
  return im;
}
template <class Pred>
size_t count_pixels(const Image& im, Pred pred) {
  size_t n = 0;
  for (size_t i = 0; i + 3 < im.rgba.size(); i += 4) n += pred(im.rgba[i], im.rgba[i + 1], im.rgba[i + 2]);
  return n;
}

}  // namespace

// The desk as a rater sees it: words the two replies do not share are
// highlighted (d toggles it), and a reply cut off at the length limit
// carries a red badge. The screenshot lands in the build folder as
// screenshots/rater.png (the README's docs/images/rater.png is a copy).
TEST(RaterHeadless, RepliesShowTheirDifferencesAndACutOffBadge) {
  test::TempDir dir("rater-diff");
  {
    labels::LabelStore store(dir.file("l.sqlite"));
    const Json conv = Json::array(
        {{{"role", "system"}, {"content", "You are a support agent for Larkspur, an online home goods store."}},
         {{"role", "user"}, {"content", "Hi, it's Maria. Where is my order #48213? It was due on Monday."}}});
    const int64_t p = store.add_prompt(conv, nullptr);
    const int64_t a = store.add_candidate(
        p, "Hi Maria, thanks for reaching out. Your order #48213 shipped on Friday and should arrive within 2 "
           "business days. You can follow it with the tracking link in your confirmation email. Is there anything "
           "else I can help you with?",
        true, "sft", nullptr);
    const int64_t b = store.add_candidate(
        p, "Hi Maria, thanks for reaching out. Your order #48213 was cancelled on Friday and a refund should arrive "
           "within 5 business days. You can follow it with the",
        false, "ppo", nullptr);
    store.add_comparison(p, {a, b});
  }
  auto shoot = [&](const std::string& script, const std::string& png) {
    std::vector<std::string> args = {"xvfb-run", "-a", "-s", "-screen 0 1280x800x24", RLHF_RATER, "--db",
                                     dir.file("l.sqlite"), "--rater", "ann", "--screenshot", png};
    if (!script.empty()) args.insert(args.end(), {"--script", script});
    const pid_t pid = test::spawn_program(args, dir.file("log"));
    ASSERT_GT(pid, 0) << "xvfb-run is missing: scripts/setup.sh installs it (package xvfb)";
    ASSERT_EQ(test::wait_exit(pid), 0) << "rlhf-rater under xvfb-run failed:\n" << read_file(dir.file("log"));
  };
  make_dirs(RLHF_SCREENSHOT_DIR);
  const std::string shown = join_path(RLHF_SCREENSHOT_DIR, "rater.png");
  shoot("", shown);
  shoot("d", dir.file("plain.png"));
  const Image on = load_png(shown), off = load_png(dir.file("plain.png"));
  ASSERT_EQ(on.w, 1280);
  ASSERT_EQ(off.w, 1280);
  // The highlight: amber behind the differing words, gone when toggled off.
  auto amber = [](int r, int g, int b) { return r > 90 && r - b > 50 && g - b > 25 && r > g; };
  const size_t amber_on = count_pixels(on, amber), amber_off = count_pixels(off, amber);
  EXPECT_GT(amber_on, 2000u) << "differing words are highlighted";
  EXPECT_LT(amber_off * 4, amber_on) << "d turns the highlighting off";
  // The badge: a filled red label in both.
  auto badge_red = [](int r, int g, int b) { return r == 191 && g == 51 && b == 38; };
  EXPECT_GT(count_pixels(on, badge_red), 300u) << "the cut-off reply has its badge";
  EXPECT_GT(count_pixels(off, badge_red), 300u);
}

// The rater tool's state classes, without a window: choices and the order
// they were shown in, skip, undo, rankings, ratings, labels kept across a
// lost connection and re-sent without doubling, the compare view's tally.
// Plus one headless run of rlhf-rater under Xvfb (label e2e in CMake).
#include <gtest/gtest.h>

#include <set>

#include "common/fs.h"
#include "feedback-ui/backend.h"
#include "feedback-ui/compare_session.h"
#include "feedback-ui/rater_session.h"
#include "feedback-ui/word_diff.h"
#include "label_fixture.h"
#include "labels/desk.h"
#include "test_util.h"

using namespace rlhf;
using namespace rlhf::ui;
using labels::Choice;

namespace {

// A local store behind a switch that can cut the "connection".
class FlakyBackend : public RatingBackend {
 public:
  explicit FlakyBackend(const std::string& db) : inner_(make_local_backend(db, "ann", labels::DeskConfig{})) {}
  bool down = false;
  int submits = 0;
  std::string rater() const override { return inner_->rater(); }
  std::optional<labels::RatingTask> next_task(const std::vector<int64_t>& ex, int64_t prefer) override {
    check();
    return inner_->next_task(ex, prefer);
  }
  int64_t submit(const labels::Label& l) override {
    check();
    ++submits;
    return inner_->submit(l);
  }
  int64_t undo() override {
    check();
    return inner_->undo();
  }
  labels::RaterProgress progress() override {
    check();
    return inner_->progress();
  }
  void reconnect() override { check(); }

 private:
  void check() const {
    if (down) fail(ErrorKind::kNetwork, "connection refused");
  }
  std::unique_ptr<RatingBackend> inner_;
};

struct Fixture {
  explicit Fixture(const std::string& name, int pairs = 6, int rankings = 0) : dir(name) {
    {
      labels::LabelStore s(dir.file("l.sqlite"));
      test::fill_label_store(s, pairs, 1, rankings);
    }
    backend = std::make_unique<FlakyBackend>(dir.file("l.sqlite"));
    session = std::make_unique<RaterSession>(*backend, "test");
    session->refresh();
  }
  labels::LabelStore store() { return labels::LabelStore(dir.file("l.sqlite")); }
  test::TempDir dir;
  std::unique_ptr<FlakyBackend> backend;
  std::unique_ptr<RaterSession> session;
};

}  // namespace

TEST(RaterSession, AChoiceIsRecordedWithTheOrderTheRaterSaw) {
  Fixture f("ui-choice", 10);
  int swapped = 0;
  for (int i = 0; i < 10; ++i) {
    const auto task = *f.session->task();
    const int64_t left = task.replies[0].candidate_id;
    f.session->draft().strength = 2;
    f.session->draft().rationale = "uses the order number";
    ASSERT_TRUE(f.session->choose(PairChoice::kLeft));
    auto store = f.store();
    const labels::Label l = store.labels_of_comparison(task.comparison_id).at(0);
    const labels::Comparison c = store.comparison(task.comparison_id);
    EXPECT_EQ(l.shown_order.front(), left);
    const int64_t winner = l.choice == Choice::kA ? c.candidates[0] : c.candidates[1];
    EXPECT_EQ(winner, left) << "the reply shown on the left won";
    EXPECT_EQ(l.strength, 2);
    EXPECT_EQ(l.rationale, "uses the order number");
    swapped += left != c.candidates[0];
  }
  EXPECT_GT(swapped, 0);
  EXPECT_LT(swapped, 10);
  EXPECT_EQ(f.session->labelled_this_session(), 10u);
  EXPECT_FALSE(f.session->task()) << "all done";
}

TEST(RaterSession, TieAndBothBadCarryNoStrength) {
  Fixture f("ui-tie", 2);
  f.session->draft().strength = 2;
  const int64_t first = f.session->task()->comparison_id;
  f.session->choose(PairChoice::kTie);
  f.session->choose(PairChoice::kBothBad);
  auto store = f.store();
  EXPECT_EQ(store.labels_of_comparison(first).at(0).choice, Choice::kTie);
  EXPECT_EQ(store.labels_of_comparison(first).at(0).strength, 0);
  EXPECT_EQ(store.labels().back().choice, Choice::kBothBad);
}

TEST(RaterSession, SkipMovesOnWithoutALabel) {
  Fixture f("ui-skip", 3);
  const int64_t first = f.session->task()->comparison_id;
  f.session->skip();
  ASSERT_TRUE(f.session->task());
  EXPECT_NE(f.session->task()->comparison_id, first);
  EXPECT_EQ(f.store().count_labels(), 0u);
  EXPECT_EQ(f.session->skipped(), 1u);
}

TEST(RaterSession, UndoTakesBackTheLastLabelAndShowsItsTaskAgain) {
  Fixture f("ui-undo", 3);
  const int64_t first = f.session->task()->comparison_id;
  f.session->choose(PairChoice::kRight);
  EXPECT_EQ(f.store().count_labels(), 1u);
  ASSERT_TRUE(f.session->undo());
  EXPECT_EQ(f.store().count_labels(), 0u);
  EXPECT_EQ(f.session->task()->comparison_id, first);
  EXPECT_EQ(f.session->labelled_this_session(), 0u);
  // An unsent label is dropped locally, never reaching the store.
  f.backend->down = true;
  f.session->choose(PairChoice::kLeft);
  EXPECT_EQ(f.session->unsent(), 1u);
  ASSERT_TRUE(f.session->undo());
  EXPECT_EQ(f.session->unsent(), 0u);
  f.backend->down = false;
  f.session->reconnect();
  EXPECT_EQ(f.store().count_labels(), 0u);
  EXPECT_EQ(f.backend->submits, 1);
}

TEST(RaterSession, LabelsSurviveALostConnectionAndAreSentOnce) {
  Fixture f("ui-lost", 5);
  f.session->choose(PairChoice::kLeft);  // sent
  const auto held = *f.session->task();
  f.backend->down = true;
  f.session->choose(PairChoice::kRight);  // queued: the connection is down
  EXPECT_FALSE(f.session->connected());
  EXPECT_EQ(f.session->unsent(), 1u);
  EXPECT_EQ(f.store().count_labels(), 1u);
  EXPECT_FALSE(f.session->reconnect()) << "still down";
  f.backend->down = false;
  EXPECT_TRUE(f.session->reconnect());
  EXPECT_EQ(f.session->unsent(), 0u);
  EXPECT_EQ(f.store().count_labels(), 2u);
  EXPECT_EQ(f.store().labels_of_comparison(held.comparison_id).size(), 1u);
  // A resend of an acknowledged label (the ack was lost) is not doubled.
  auto store = f.store();
  labels::RatingDesk desk(store, {});
  const labels::Rater ann = *store.rater_by_name("ann");
  labels::Label again = f.session->sent().back();
  EXPECT_EQ(desk.submit(ann, again), f.session->sent().back().id);
  EXPECT_EQ(f.store().count_labels(), 2u);
}

TEST(RaterSession, RankingsNeedEveryRankAndKeepTheShownOrder) {
  Fixture f("ui-rank", 0, 1);
  ASSERT_TRUE(f.session->task() && f.session->task()->ranking);
  const auto task = *f.session->task();
  EXPECT_FALSE(f.session->choose(PairChoice::kLeft));
  EXPECT_FALSE(f.session->submit_ranking()) << "no ranks given yet";
  EXPECT_NE(f.session->status().find("rank"), std::string::npos);
  f.session->draft().ranks = {2, 1, 2};  // the middle reply best, the others tied
  ASSERT_TRUE(f.session->submit_ranking());
  auto store = f.store();
  const labels::Label l = store.labels().at(0);
  const labels::Comparison c = store.comparison(task.comparison_id);
  EXPECT_EQ(l.choice, Choice::kRanking);
  for (size_t j = 0; j < 3; ++j) {
    const size_t i =
        std::find(c.candidates.begin(), c.candidates.end(), task.replies[j].candidate_id) - c.candidates.begin();
    EXPECT_EQ(l.ranking[i], (std::vector<int>{2, 1, 2})[j]);
  }
}

TEST(CompareSession, VotesAsShownBecomeATallyForPolicyA) {
  test::TempDir dir("ui-compare");
  std::string rows;
  for (int i = 0; i < 20; ++i)
    rows += R"({"prompt":[{"role":"user","content":"q)" + std::to_string(i) +
            R"("}],"replies":{"ppo":{"response":"good"},"sft":{"response":"bad"}}})" + "\n";
  write_file_atomic(dir.file("replies.jsonl"), rows);
  write_file_atomic(dir.file("compare.json"), R"({"policies":[{"name":"ppo","mean_reward":1.5,"mean_gold":6.0}]})");
  CompareSession c(dir.path(), "ppo", "sft");
  ASSERT_EQ(c.size(), 20u);
  int left_a = 0;
  while (!c.done()) {
    left_a += c.a_on_left();
    // The person always picks the reply that says "good", wherever it is shown.
    c.vote(c.a_on_left() ? PairChoice::kLeft : PairChoice::kRight);
  }
  EXPECT_GT(left_a, 0);
  EXPECT_LT(left_a, 20);
  const WinRate t = c.tally();
  EXPECT_EQ(t.wins, 20);
  EXPECT_DOUBLE_EQ(t.rate, 1.0);
  EXPECT_EQ(c.leaderboard().at(0).name, "ppo");
  EXPECT_NE(c.last_reveal().find("ppo"), std::string::npos);
  // The votes were saved as cast: a new session starts where this one stopped.
  EXPECT_EQ(test::file_lines(dir.file("human_votes.jsonl")).size(), 20u);
  {
    CompareSession again(dir.path(), "ppo", "sft");
    EXPECT_TRUE(again.done());
    EXPECT_EQ(again.tally().wins, 20);
  }

  remove_all(dir.file("human_votes.jsonl"));
  write_file_atomic(dir.file("replies.jsonl"), "{\"prompt\": []}\n");
  EXPECT_NE(test::error_of([&] { CompareSession bad(dir.path(), "", ""); }).find(":1"), std::string::npos);
}

TEST(WordDiff, MarksTheWordsEachReplyDoesNotShareAndKeepsTheText) {
  const std::string a = "Hi Maria, your order #123 shipped today.\nThanks!";
  const std::string b = "Hi Maria, your order #123 was cancelled today.\nThanks!";
  const WordDiff d = word_diff(a, b);
  auto joined = [](const std::vector<DiffSpan>& spans) {
    std::string out;
    for (const auto& s : spans) out += s.text;
    return out;
  };
  auto changed = [](const std::vector<DiffSpan>& spans) {
    std::vector<std::string> out;
    for (const auto& s : spans) {
      if (s.changed) out.push_back(s.text);
    }
    return out;
  };
  EXPECT_EQ(joined(d.a), a);
  EXPECT_EQ(joined(d.b), b);
  EXPECT_EQ(changed(d.a), (std::vector<std::string>{"shipped "}));
  EXPECT_EQ(changed(d.b), (std::vector<std::string>{"was ", "cancelled "}));
  // Only the whitespace differs: nothing is marked.
  const WordDiff spaces = word_diff("a  b\nc", "a b c");
  for (const auto& s : spaces.a) EXPECT_FALSE(s.changed) << s.text;
  for (const auto& s : spaces.b) EXPECT_FALSE(s.changed) << s.text;
  // One side empty: every word of the other is new; leading whitespace is kept.
  const WordDiff empty = word_diff("", "  two words");
  EXPECT_TRUE(empty.a.empty());
  EXPECT_EQ(changed(empty.b), (std::vector<std::string>{"two ", "words"}));
  EXPECT_EQ(joined(empty.b), "  two words");
  // Past the size cap nothing is compared (and nothing is marked).
  const WordDiff big = word_diff("x y z", "p q r", 2);
  for (const auto& s : big.a) EXPECT_FALSE(s.changed);
}

TEST(RaterSession, TimePerLabelIsMeasuredFromTheTaskAppearingToItsLabel) {
  Fixture f("rater-time");
  auto now = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  f.session->set_clock([&] { return now; });
  f.session->skip();  // the next task appears at `now`
  EXPECT_DOUBLE_EQ(f.session->seconds_per_label(), 0.0);
  now += std::chrono::seconds(12);
  EXPECT_DOUBLE_EQ(f.session->seconds_on_task(), 12.0);
  ASSERT_TRUE(f.session->choose(PairChoice::kLeft));
  now += std::chrono::seconds(30);
  ASSERT_TRUE(f.session->choose(PairChoice::kRight));
  EXPECT_DOUBLE_EQ(f.session->seconds_per_label(), 21.0);
  EXPECT_DOUBLE_EQ(f.session->seconds_on_task(), 0.0) << "the next task has just appeared";
}

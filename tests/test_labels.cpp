// The label store: schema migration, import/export round trip, concurrent
// writers, idempotent resends, undo, and clear errors on malformed JSONL.
// The simulated rater and the gold rubric.
#include <gtest/gtest.h>

#include <thread>

#include "common/fs.h"
#include "labels/active.h"
#include "labels/desk.h"
#include "labels/feedback.h"
#include "labels/selection.h"
#include "labels/sqlite.h"
#include "labels/store.h"
#include "policy/checkpoint.h"
#include "process_util.h"
#include "reward/preference.h"
#include "reward/reward_model.h"
#include "reward/rm_train.h"
#include "reward/simulated_rater.h"
#include "support/generator.h"
#include "support/rubric.h"
#include "test_util.h"
#include "tiny_fixtures.h"

namespace rlhf {
namespace {

using labels::Choice;
using labels::Label;
using labels::LabelStore;
using test::error_of;

const char* kInput =
    R"({"prompt": "Where is my order #12345?", "chosen": "It shipped today, Maria.", "rejected": "Dunno, the", "rejected_finished": false}
{"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Refund?"}], "chosen": "Your refund is on its way.", "rejected": "No.", "margin": 1.5}
{"prompt": "Cancel order 55555", "chosen": "Cancelled.", "rejected": "Order cancelled.", "tie": true, "metadata": {"intent": "cancel_order", "order": "55555"}}
{"prompt": "Reset my password", "responses": ["Use the Forgot password link.", "Reset it online.", "No idea, I"], "ranking": [1, 2, 3], "finished": [true, true, false]}
{"prompt": "Invoice please", "responses": ["Emailed.", "Sent to your email.", "Nope."], "ranking": [1, 1, 2]}
)";

std::vector<nlohmann::json> parse_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  }
  return out;
}

TEST(LabelStore, ImportThenExportEqualsTheInput) {
  test::TempDir dir("store-rt");
  write_file_atomic(dir.file("in.jsonl"), kInput);
  LabelStore store(dir.file("l.sqlite"));
  const auto stats = store.import_jsonl(dir.file("in.jsonl"), "alice");
  EXPECT_EQ(stats.pairs, 3u);
  EXPECT_EQ(stats.rankings, 2u);
  store.export_jsonl(dir.file("out.jsonl"));
  EXPECT_EQ(parse_lines(read_file(dir.file("out.jsonl"))), parse_lines(kInput));
  // Replies cut off at the length limit stay marked, to be scored without the end-of-turn token.
  for (const PreferencePair& p : labels::store_preferences(store, 0, nullptr)) {
    EXPECT_TRUE(p.chosen_finished);
    EXPECT_EQ(p.rejected_finished, p.rejected != "Dunno, the" && p.rejected != "No idea, I") << p.rejected;
  }
  // Importing the same file again queues nothing twice.
  store.import_jsonl(dir.file("in.jsonl"), "alice");
  EXPECT_EQ(store.count_labels(), 5u);
  EXPECT_EQ(store.rater_by_name("alice")->kind, "imported");
}

TEST(LabelStore, MalformedJsonlIsAnErrorNamingFileAndLineAndImportsNothing) {
  test::TempDir dir("store-bad");
  LabelStore store(dir.file("l.sqlite"));
  const std::string good = R"({"prompt": "a", "chosen": "b", "rejected": "c"})";
  const std::pair<std::string, std::string> cases[] = {
      {"{\"prompt\": ", "not valid JSON"},
      {R"({"prompt": "a", "chosen": "b"})", "\"chosen\" and \"rejected\""},
      {R"({"chosen": "b", "rejected": "c"})", "\"prompt\""},
      {R"({"prompt": "a", "responses": ["x", "y"], "ranking": [1]})", "one rank per response"},
      {R"({"prompt": "a", "chosen": "b", "rejected": "c", "tie": "yes"})", "\"tie\""},
      {R"({"prompt": "a", "chosen": 5, "rejected": "c"})", "\"chosen\" must be a string"},
      {R"({"prompt": "a", "chosen": "b", "rejected": "c", "chosen_finished": "no"})", "\"chosen_finished\""},
      {R"({"prompt": "a", "responses": ["x", "y"], "ranking": [1, 2], "finished": [true]})", "one true/false per response"},
      // Found from outside (issue "Hardening"): each was stored or crashed.
      {R"({"prompt": "a", "chosen": "b", "rejected": "c", "margin": 1e400})", "number overflow parsing '1e400'"},
      {R"({"prompt": "a", "responses": ["x", "y"], "ranking": [4294967297, 2]})", "from 1 (best) to 2"},
      {R"({"prompt": "a", "responses": ["x", "y", "z"], "ranking": [1, 2, 4]})", "from 1 (best) to 3"},
      {R"({"prompt": "a", "chosen": "b", "rejected": "b"})", "the same reply"},
  };
  for (const auto& [line, expect] : cases) {
    write_file_atomic(dir.file("in.jsonl"), good + "\n" + line + "\n");
    const std::string msg = error_of([&] { store.import_jsonl(dir.file("in.jsonl"), "bob"); });
    EXPECT_NE(msg.find("in.jsonl:2"), std::string::npos) << msg;
    EXPECT_NE(msg.find(expect), std::string::npos) << msg;
    EXPECT_EQ(store.count_labels(), 0u) << "a bad file must import nothing";
  }
}

// Importing the same pairs under a second rater added nothing; a rerun of
// the same import must not double anything (issue "Hardening").
TEST(LabelStore, EachRatersImportIsKeptOnceAndDisagreementIsCounted) {
  test::TempDir dir("store-raters");
  LabelStore store(dir.file("l.sqlite"));
  write_file_atomic(dir.file("ann.jsonl"), R"({"prompt": "p", "chosen": "good", "rejected": "bad"}
{"prompt": "q", "responses": ["x", "y", "z"], "ranking": [1, 2, 3]}
)");
  // Bob prefers the other reply and ranks the other way round.
  write_file_atomic(dir.file("bob.jsonl"), R"({"prompt": "p", "chosen": "bad", "rejected": "good"}
{"prompt": "q", "responses": ["z", "x", "y"], "ranking": [3, 1, 2]}
)");
  const auto ann = store.import_jsonl(dir.file("ann.jsonl"), "ann");
  EXPECT_EQ(ann.pairs + ann.rankings, 2u);
  const auto again = store.import_jsonl(dir.file("ann.jsonl"), "ann");
  EXPECT_EQ(again.pairs + again.rankings, 0u);
  EXPECT_EQ(again.already_there, 2u);
  const auto bob = store.import_jsonl(dir.file("bob.jsonl"), "bob");
  EXPECT_EQ(bob.pairs + bob.rankings, 2u);
  EXPECT_EQ(bob.disagreements, 1u) << "the pair disagrees; the ranking is the same one, listed in another order";
  EXPECT_EQ(store.count_labels(), 4u);
  EXPECT_EQ(store.comparisons().size(), 2u);
  // Exported, each rater's view survives: ann's chosen is "good", bob's "bad".
  int good_first = 0, bad_first = 0;
  for (const Json& r : store.export_records()) {
    if (!r.contains("chosen")) continue;
    good_first += r["chosen"] == "good";
    bad_first += r["chosen"] == "bad";
  }
  EXPECT_EQ(good_first, 1);
  EXPECT_EQ(bad_first, 1);
}

// `labels import` killed and run again left comparisons without their label
// for good (2 of 3,000): the import is one transaction now.
TEST(LabelStore, AnImportKilledAndRunAgainLeavesEveryComparisonLabelledOnce) {
  test::TempDir dir("store-kill");
  std::string text;
  for (int i = 0; i < 3000; ++i) {
    text += "{\"prompt\": \"question " + std::to_string(i) + "\", \"chosen\": \"yes " + std::to_string(i) +
            "\", \"rejected\": \"no\"}\n";
  }
  write_file_atomic(dir.file("pairs.jsonl"), text);
  const std::vector<std::string> args = {"labels", "import", dir.file("pairs.jsonl"), "--db", dir.file("l.sqlite")};
  for (int delay_ms : {150, 400}) {
    const pid_t pid = test::spawn_cli(args, dir.file("killed.log"));
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    test::wait_exit(pid);
  }
  ASSERT_EQ(test::run_cli(args, dir.file("rerun.log")), 0) << read_file(dir.file("rerun.log"));
  LabelStore store(dir.file("l.sqlite"));
  EXPECT_EQ(store.comparisons().size(), 3000u);
  EXPECT_EQ(store.count_labels(), 3000u);
  for (const auto& c : store.comparisons()) ASSERT_EQ(store.labels_of_comparison(c.id).size(), 1u) << c.id;
}

TEST(LabelStore, AFolderInsteadOfAJsonlFileIsAnError) {
  test::TempDir dir("store-dir");
  LabelStore store(dir.file("l.sqlite"));
  make_dirs(dir.file("pairs.jsonl"));
  const std::string msg = error_of([&] { store.import_jsonl(dir.file("pairs.jsonl"), "bob"); });
  EXPECT_NE(msg.find("is a folder"), std::string::npos) << msg;
}

TEST(LabelStore, ConcurrentWritersLoseNothing) {
  test::TempDir dir("store-conc");
  const std::string path = dir.file("l.sqlite");
  std::vector<int64_t> comparisons;
  std::vector<int64_t> raters;
  {
    LabelStore store(path);
    const int64_t p = store.add_prompt("hello", nullptr);
    for (int i = 0; i < 40; ++i) {
      const int64_t a = store.add_candidate(p, "reply a" + std::to_string(i), true, "x", nullptr);
      const int64_t b = store.add_candidate(p, "reply b" + std::to_string(i), true, "x", nullptr);
      comparisons.push_back(*store.add_comparison(p, {a, b}));
    }
    for (int r = 0; r < 6; ++r) raters.push_back(store.add_rater("rater" + std::to_string(r), "", "human"));
  }
  std::vector<std::thread> threads;
  for (int r = 0; r < 6; ++r) {
    threads.emplace_back([&, r] {
      LabelStore store(path);  // each writer its own connection
      for (int64_t c : comparisons) {
        Label l;
        l.comparison_id = c;
        l.rater_id = raters[r];
        l.choice = (c + r) % 2 ? Choice::kA : Choice::kB;
        store.add_label(l);
      }
    });
  }
  for (auto& t : threads) t.join();
  LabelStore store(path);
  EXPECT_EQ(store.count_labels(), 6u * comparisons.size());
}

TEST(LabelStore, ResendsAreIdempotentAndUndoRemovesTheLastLabel) {
  test::TempDir dir("store-idem");
  LabelStore store(dir.file("l.sqlite"));
  const int64_t p = store.add_prompt("q", nullptr);
  const int64_t a = store.add_candidate(p, "x", true, "", nullptr), b = store.add_candidate(p, "y", true, "", nullptr);
  EXPECT_EQ(store.add_candidate(p, "x", true, "", nullptr), a) << "same text, same candidate";
  const int64_t c = *store.add_comparison(p, {a, b});
  EXPECT_FALSE(store.add_comparison(p, {b, a}).has_value()) << "the same pair is queued once";
  const int64_t r = store.add_rater("carol", "hash", "human");
  Label l;
  l.comparison_id = c;
  l.rater_id = r;
  l.choice = Choice::kB;
  l.client_id = "carol-1";
  l.shown_order = {b, a};
  const int64_t id = store.add_label(l);
  EXPECT_EQ(store.add_label(l), id) << "a resend must not write a second label";
  EXPECT_EQ(store.count_labels(), 1u);
  l.client_id = "carol-2";
  EXPECT_NE(error_of([&] { store.add_label(l); }).find("already labelled"), std::string::npos);
  const Label back = store.labels_of_comparison(c).at(0);
  EXPECT_EQ(back.shown_order, (std::vector<int64_t>{b, a}));
  EXPECT_EQ(back.choice, Choice::kB);
  EXPECT_FALSE(back.created_at.empty());
  EXPECT_EQ(store.open_comparisons_for(r).size(), 0u);
  EXPECT_EQ(store.undo_last_label(r), c);
  EXPECT_EQ(store.count_labels(), 0u);
  EXPECT_EQ(store.open_comparisons_for(r).size(), 1u);
}

TEST(LabelStore, AnOlderSchemaIsMigratedInPlaceKeepingItsData) {
  test::TempDir dir("store-migrate");
  const std::string path = dir.file("old.sqlite");
  {
    // A store as version 1 of this program wrote it.
    sql::Db db(path);
    db.exec(R"sql(
CREATE TABLE raters(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, token_hash TEXT, kind TEXT NOT NULL DEFAULT 'human', created_at TEXT NOT NULL);
CREATE TABLE prompts(id INTEGER PRIMARY KEY, messages TEXT NOT NULL, source TEXT NOT NULL, metadata TEXT, hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL);
CREATE TABLE candidates(id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id), text TEXT NOT NULL, finished INTEGER NOT NULL DEFAULT 1, policy TEXT NOT NULL DEFAULT '', sampling TEXT, created_at TEXT NOT NULL, UNIQUE(prompt_id, text));
CREATE TABLE comparisons(id INTEGER PRIMARY KEY, prompt_id INTEGER NOT NULL REFERENCES prompts(id), candidates TEXT NOT NULL, candidate_key TEXT NOT NULL UNIQUE, required_raters INTEGER NOT NULL DEFAULT 1, is_gold INTEGER NOT NULL DEFAULT 0, gold_answer TEXT, created_at TEXT NOT NULL);
CREATE TABLE labels(id INTEGER PRIMARY KEY, comparison_id INTEGER NOT NULL REFERENCES comparisons(id), rater_id INTEGER NOT NULL REFERENCES raters(id), choice TEXT NOT NULL, ranking TEXT, ratings TEXT, strength INTEGER NOT NULL DEFAULT 0, margin REAL, rationale TEXT NOT NULL DEFAULT '', shown_order TEXT, created_at TEXT NOT NULL, UNIQUE(comparison_id, rater_id));
INSERT INTO raters VALUES(1, 'old', NULL, 'human', '2025-01-01T00:00:00Z');
INSERT INTO prompts VALUES(1, '[{"role":"user","content":"hi"}]', '"hi"', NULL, 'h', '2025-01-01T00:00:00Z');
INSERT INTO candidates VALUES(1, 1, 'a', 1, '', NULL, 'x'), (2, 1, 'b', 1, '', NULL, 'x');
INSERT INTO comparisons VALUES(1, 1, '[1,2]', '[1,2]', 1, 0, NULL, 'x');
INSERT INTO labels VALUES(1, 1, 1, 'a', NULL, NULL, 0, NULL, '', '[1,2]', '2025-01-01T00:00:00Z');
PRAGMA user_version = 1;
)sql");
  }
  LabelStore store(path);
  EXPECT_EQ(store.schema_version(), LabelStore::latest_schema_version());
  ASSERT_EQ(store.count_labels(), 1u);
  EXPECT_EQ(store.export_records()[0]["chosen"], "a");
  // The new column works.
  const int64_t r = store.add_rater("new", "", "human");
  Label l;
  l.comparison_id = 1;
  l.rater_id = r;
  l.choice = Choice::kTie;
  l.client_id = "k";
  const int64_t id = store.add_label(l);
  EXPECT_EQ(store.add_label(l), id);
}

TEST(Preferences, RankingsAndTiesExpandAndWeighAsSpecified) {
  const std::vector<Json> rows = {
      Json::parse(R"({"prompt": "p", "responses": ["x", "y", "z"], "ranking": [2, 1, 2]})"),
      Json::parse(R"({"prompt": "q", "chosen": "c", "rejected": "r", "tie": true, "margin": 0.5})"),
  };
  const auto pairs = preference_pairs(rows, "mem");
  ASSERT_EQ(pairs.size(), 4u);
  // C(3,2) = 3 pairs of weight 1/3: (x,y) -> y wins, (x,z) tie, (y,z) -> y wins.
  EXPECT_EQ(pairs[0].chosen, "y");
  EXPECT_EQ(pairs[0].rejected, "x");
  EXPECT_FALSE(pairs[0].tie);
  EXPECT_TRUE(pairs[1].tie);
  EXPECT_EQ(pairs[2].chosen, "y");
  EXPECT_EQ(pairs[2].rejected, "z");
  for (int i = 0; i < 3; ++i) {
    EXPECT_DOUBLE_EQ(pairs[i].weight, 1.0 / 3.0);
    EXPECT_EQ(pairs[i].group, 0);
  }
  EXPECT_TRUE(pairs[3].tie);
  EXPECT_DOUBLE_EQ(pairs[3].margin, 0.5);
  EXPECT_DOUBLE_EQ(pairs[3].weight, 1.0);
}

TEST(SimulatedRater, IsDeterministicAndAgreesWithItselfAsConfigured) {
  SimulatedRaterConfig a, b;
  a.seed = 1;
  b.seed = 2;
  int agree = 0, n = 20000, same_as_gold = 0;
  for (int i = 0; i < n; ++i) {
    const double g1 = i % 7, g2 = (i % 7) + 1 + i % 3;  // always distinct
    const Judgement ja = simulated_judgement(g1, g2, a, i);
    EXPECT_EQ(ja, simulated_judgement(g1, g2, a, i));
    agree += ja == simulated_judgement(g1, g2, b, i);
    same_as_gold += ja == Judgement::kSecond;
  }
  const double expected = expected_self_agreement(a);
  EXPECT_NEAR(expected, 0.735, 1e-9);
  EXPECT_NEAR(static_cast<double>(agree) / n, expected, 0.015);
  EXPECT_NEAR(static_cast<double>(same_as_gold) / n, 1 - a.flip - a.tie, 0.015);
  // Equal gold: an honest judgement is a tie.
  SimulatedRaterConfig clean;
  clean.flip = 0;
  clean.tie = 0;
  EXPECT_EQ(simulated_judgement(3, 3, clean, 1), Judgement::kTie);
  EXPECT_EQ(simulated_ranking({1, 5, 3, 5}, clean, 1), (std::vector<int>{4, 1, 3, 1}));
}

TEST(GoldRubric, RewardsWhatTheDocumentedRubricSays) {
  support::CaseFacts f{"refund_status", "Maria", "48213", "Aero Blender"};
  const auto best = support::gold_score(
      f, "Hi Maria, thanks for reaching out. The refund for order #48213 has been issued to your original payment "
         "method. It takes 5-7 business days to appear. Is there anything else I can help you with?",
      true);
  EXPECT_DOUBLE_EQ(best.total, support::gold_max());
  EXPECT_TRUE(best.on_intent && best.right_order && best.used_name && best.polite && best.closing && best.ended);
  // Each fault costs points.
  const auto terse = support::gold_score(f, "Refund issued.", true);
  EXPECT_TRUE(terse.clipped);
  EXPECT_LT(terse.total, 0);
  const auto wrong = support::gold_score(f, "Hi Maria, thanks. The refund for order #48213 will take 30 business days to appear.", true);
  EXPECT_TRUE(wrong.invented_policy);
  const auto rude = support::gold_score(f, "Read the policy next time. Your refund for order #48213 is on its way to your original payment method.", true);
  EXPECT_TRUE(rude.rude);
  const auto other = support::gold_score(f, "Hi Omar, your refund for order #11111 takes 5-7 business days. Thanks!", true);
  EXPECT_TRUE(other.wrong_name);
  EXPECT_TRUE(other.invented_order);
  EXPECT_FALSE(other.right_order);
  const auto cut = support::gold_score(f, "Hi Maria, thanks for reaching out. The refund for order #48213 has been", false);
  EXPECT_FALSE(cut.ended);
  EXPECT_LT(cut.total, best.total - 3);
  EXPECT_LT(wrong.total, best.total);
  EXPECT_LT(rude.total, best.total);
  // Facts can be read from the conversation when there is no metadata.
  const auto inferred = support::infer_facts({"Hi, I'm Maria. Where is order #48213?"});
  EXPECT_EQ(inferred.first_name, "Maria");
  EXPECT_EQ(inferred.order, "48213");
}

// The stricter judge (issue: a gold judge that catches what a customer
// would): the PPO replies quoted in the issue, each caught by its finding.
TEST(GoldRubric, CatchesWhatACustomerWouldNotAccept) {
  // Broken words and a stutter scored 7, above a coherent reply at 6.
  const support::CaseFacts tariq{"damaged_item", "Tariq", "80412", "Glow Smart Bulb"};
  const auto garbled = support::gold_score(
      tariq, "I'm sorry the Tariq, I'm sorry the trouble. I've arranged a replacement Tari there's no cost.", true);
  EXPECT_TRUE(garbled.garbled);
  EXPECT_EQ(support::unknown_words("I've arranged a replacement Tari there's no cost."), std::vector<std::string>{"tari"});
  const auto coherent = support::gold_score(
      tariq, "Hi Tariq, I'm sorry the Glow Smart Bulb arrived damaged. I've sent a free replacement.", true);
  EXPECT_FALSE(coherent.garbled);
  EXPECT_GT(coherent.total, garbled.total);
  const support::CaseFacts complaint{"complaint", "", "91234", "Aero Blender"};
  EXPECT_TRUE(support::gold_score(complaint, "Hello E supervisor has your order. We'll email you a 28 hours.", true).garbled);
  // The same fragment in two sentences is not a stutter (the generator's
  // own good replies say "I'm sorry about this. I'm sorry about ...").
  EXPECT_FALSE(support::gold_score(complaint, "I'm sorry about this. I'm sorry about your experience with your order.", true)
                   .garbled);

  // A product other than the customer's.
  const support::CaseFacts runner{"return_item", "", "85555", "Meadow Table Runner"};
  const auto fan = support::gold_score(
      runner, "You can return your order within 30 days. I've emailed you a free return label; please pack the Breeze "
              "Tower Fan unused in its original box.",
      true);
  EXPECT_TRUE(fan.wrong_product);
  EXPECT_FALSE(support::gold_score(runner, "Please pack the Table Runner unused in its original box.", true).wrong_product);
  const support::CaseFacts warranty{"warranty_claim", "", "85555", "Breeze Tower Fan"};
  EXPECT_TRUE(support::gold_score(warranty, "Your Memory Pillow Office Chair is covered by our 1-year warranty.", true)
                  .wrong_product);
  EXPECT_EQ(support::products_named("the Memory Pillow Office Chair"),
            (std::vector<std::string>{"Willow Office Chair", "Drift Memory Pillow"}));

  // An action that contradicts the intent.
  const support::CaseFacts status{"order_status", "", "85555", "Breeze Tower Fan"};
  const auto replaced = support::gold_score(
      status, "I've arranged a replacement Breeze Tower Fan for your order at no cost. There's no need to send the "
              "damaged item back.",
      true);
  EXPECT_TRUE(replaced.wrong_action);
  const auto cancelled = support::gold_score(status, "Thanks for reaching out. I've cancelled it.", true);
  EXPECT_TRUE(cancelled.wrong_action);
  EXPECT_FALSE(support::gold_score(status, "Your order shipped on May 3 and is in transit.", true).wrong_action);
  EXPECT_EQ(support::actions_for_intent("cancel_order"), (std::vector<std::string>{"cancel", "refund"}));

  // Inferred facts include the product the customer named.
  EXPECT_EQ(support::infer_facts({"Hi, my Breeze Tower Fan from order 81234 is broken."}).product, "Breeze Tower Fan");
}

// The new findings never fire on the generator's good replies, and catch
// its off-topic ones (an answer to another intent).
TEST(GoldRubric, StricterFindingsSpareGoodRepliesAndCatchOffTopicOnes) {
  const support::SupportData data = support::generate_support_data(support::GeneratorConfig());
  int good = 0, off_topic = 0, off_topic_caught = 0;
  for (const Json& row : data.train) {
    const Json& md = row["metadata"];
    if (!md.contains("styles")) continue;
    std::string last;
    for (const Json& m : row["messages"]) {
      if (m["role"] == "assistant") last = m["content"];
    }
    const std::string style = md["styles"].back();
    const support::GoldScore g = support::gold_score(support::facts_from_metadata(md), last, true);
    if (style == "good") {
      ++good;
      EXPECT_FALSE(g.wrong_product || g.garbled || g.wrong_action) << last;
    } else if (style == "off_topic") {
      ++off_topic;
      off_topic_caught += g.wrong_action;
    }
  }
  EXPECT_GT(good, 1500);
  EXPECT_GT(off_topic, 100);
  EXPECT_GT(off_topic_caught, 0.9 * off_topic);
}

TEST(ActiveSelection, StrategiesScoreAsSpecifiedOnHandMadeSignals) {
  using labels::SelectionStrategy;
  auto score = [](SelectionStrategy s, std::vector<double> margins, bool mixed = false) {
    labels::ComparisonSignals g;
    g.margins = std::move(margins);
    g.mixed_sources = mixed;
    return labels::selection_score(s, g);
  };
  // Uncertainty: 1 at a coin flip, falling with |margin|, whichever reply is ahead.
  EXPECT_DOUBLE_EQ(score(SelectionStrategy::kUncertainty, {0.0}), 1.0);
  EXPECT_NEAR(score(SelectionStrategy::kUncertainty, {std::log(3.0)}), 0.5, 1e-12);  // p = 0.75
  EXPECT_DOUBLE_EQ(score(SelectionStrategy::kUncertainty, {-1.3}), score(SelectionStrategy::kUncertainty, {1.3}));
  EXPECT_GT(score(SelectionStrategy::kUncertainty, {0.5}), score(SelectionStrategy::kUncertainty, {2.0}));
  // With an ensemble, uncertainty reads the mean margin.
  EXPECT_DOUBLE_EQ(score(SelectionStrategy::kUncertainty, {2.0, -2.0}), 1.0);
  // Disagreement: the spread of the members' probabilities, 0 when they agree.
  EXPECT_DOUBLE_EQ(score(SelectionStrategy::kDisagreement, {1.0, 1.0, 1.0}), 0.0);
  EXPECT_NEAR(score(SelectionStrategy::kDisagreement, {std::log(3.0), -std::log(3.0)}), 0.25, 1e-12);
  EXPECT_GT(score(SelectionStrategy::kDisagreement, {3.0, -3.0}), score(SelectionStrategy::kDisagreement, {0.5, -0.5}));
  EXPECT_NE(error_of([&] { score(SelectionStrategy::kDisagreement, {1.0}); }).find("two or more reward models"),
            std::string::npos);
  EXPECT_DOUBLE_EQ(score(SelectionStrategy::kDiversity, {}, true), 1.0);
  EXPECT_DOUBLE_EQ(score(SelectionStrategy::kDiversity, {}, false), 0.0);
  // Gradient: 2 p (1 - p) |h(a) - h(b)|, averaged over members.
  auto gradient = [](std::vector<double> margins, std::vector<double> distances) {
    labels::ComparisonSignals g;
    g.margins = std::move(margins);
    g.feature_distances = std::move(distances);
    return labels::selection_score(SelectionStrategy::kGradient, g);
  };
  EXPECT_DOUBLE_EQ(gradient({0.0}, {2.0}), 1.0);
  EXPECT_NEAR(gradient({std::log(3.0)}, {4.0}), 2 * 0.75 * 0.25 * 4.0, 1e-12);
  EXPECT_NEAR(gradient({0.0, std::log(3.0)}, {2.0, 4.0}), (1.0 + 1.5) / 2, 1e-12);
  // A coin flip between near-identical replies (a likely true tie) ranks
  // below a less certain call between replies the model tells apart, which
  // is where uncertainty and gradient differ.
  EXPECT_GT(score(SelectionStrategy::kUncertainty, {0.0}), score(SelectionStrategy::kUncertainty, {1.0}));
  EXPECT_LT(gradient({0.0}, {0.1}), gradient({1.0}, {3.0}));
  EXPECT_NE(error_of([&] { gradient({0.5}, {}); }).find("features"), std::string::npos);
  EXPECT_NE(error_of([] { labels::parse_selection_strategy("entropy", "strategy"); }).find("strategy = \"entropy\""),
            std::string::npos);
  EXPECT_NE(error_of([] { labels::checked_strategy("uncertainty", 0, "strategy"); }).find("needs a reward model"),
            std::string::npos);
  EXPECT_NE(error_of([] { labels::checked_strategy("gradient", 0, "strategy"); }).find("\"gradient\" needs a reward model"),
            std::string::npos);
}

TEST(ActiveSelection, BadgeScoresTheGradientEmbeddingsLengthAndSpreadsItsBatchByKMeansPlusPlus) {
  // Its score: (1 - q) |h(a) - h(b)|, q the predicted label's probability.
  labels::ComparisonSignals g;
  g.margins = {-std::log(3.0)};  // q = 0.75, whichever reply is ahead
  g.feature_distances = {4.0};
  EXPECT_NEAR(labels::selection_score(labels::SelectionStrategy::kBadge, g), 0.25 * 4.0, 1e-12);
  g.margins = {std::log(3.0), 0.0};  // averaged over members: (1.0 + 0.5 * 2) / 2
  g.feature_distances = {4.0, 2.0};
  EXPECT_NEAR(labels::selection_score(labels::SelectionStrategy::kBadge, g), 1.0, 1e-12);
  g.feature_distances.clear();
  EXPECT_NE(error_of([&] { labels::selection_score(labels::SelectionStrategy::kBadge, g); }).find("badge selection needs"),
            std::string::npos);
  EXPECT_NE(error_of([] { labels::checked_strategy("badge", 0, "strategy"); }).find("\"badge\" needs a reward model"),
            std::string::npos);

  // Three kinds of comparison, 50 near-copies each; the third kind has the
  // largest gradients. A batch of 3 takes one of each kind, largest first,
  // where the top 3 by length would all be of the third kind.
  std::vector<float> points;
  std::vector<int> kind;
  const float centres[3][2] = {{10, 0}, {0, 10}, {-12, -12}};
  for (int k = 0; k < 3; ++k) {
    for (int i = 0; i < 50; ++i) {
      points.push_back(centres[k][0] + 0.01f * static_cast<float>(i % 7));
      points.push_back(centres[k][1] + 0.01f * static_cast<float>(i % 5));
      kind.push_back(k);
    }
  }
  for (uint64_t seed : {1, 2, 3}) {
    const std::vector<size_t> picks = labels::kmeans_pp_picks(points, 2, 3, seed);
    ASSERT_EQ(picks.size(), 3u);
    EXPECT_EQ(kind[picks[0]], 2) << "the largest gradient comes first";
    EXPECT_EQ(std::set<int>({kind[picks[0]], kind[picks[1]], kind[picks[2]]}).size(), 3u) << "seed " << seed;
  }
  // Exact copies are never picked twice while a distinct row is left; more
  // picks than rows gives every row once.
  const std::vector<float> copies = {1, 1, 1, 1, 1, 1, 1, 1, 0, 2};  // four copies of (1, 1), then (0, 2)
  const std::vector<size_t> two = labels::kmeans_pp_picks(copies, 2, 2, 7);
  EXPECT_EQ(std::set<size_t>(two.begin(), two.end()).count(4), 1u);
  std::vector<size_t> all = labels::kmeans_pp_picks(copies, 2, 9, 7);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, (std::vector<size_t>{0, 1, 2, 3, 4}));
  EXPECT_NE(error_of([&] { labels::kmeans_pp_picks(copies, 3, 2, 7); }).find("not rows of 3"), std::string::npos);
}

TEST(ActiveSelection, OrderTakesTheHighestScoresFirstAndKeepsTheRandomFloor) {
  const size_t n = 1000;
  std::vector<double> scores(n);
  for (size_t i = 0; i < n; ++i) scores[i] = static_cast<double>((i * 7919) % n);  // a permutation of 0..999
  const auto picks = labels::order_for_labelling(scores, 0.1, 7);
  ASSERT_EQ(picks.size(), n);
  std::vector<bool> seen(n, false);
  size_t random = 0;
  double last_scored = 1e9;
  double random_score_sum = 0;
  for (size_t pos = 0; pos < n; ++pos) {
    const auto& p = picks[pos];
    ASSERT_FALSE(seen[p.index]) << "index " << p.index << " picked twice";
    seen[p.index] = true;
    if (p.random_floor) {
      ++random;
      if (pos < 500) random_score_sum += scores[p.index];
    } else {
      // Picks by score come highest first.
      EXPECT_LT(scores[p.index], last_scored) << "at position " << pos;
      last_scored = scores[p.index];
    }
    // The floor holds in every prefix: floor(n * 0.1) random picks in the first n.
    ASSERT_EQ(random, (pos + 1) / 10) << "after " << pos + 1 << " picks";
  }
  // The random picks in the first half are drawn from everything left, not
  // from the top: their mean score is near the middle (499.5), far from the
  // ~750 of the picks by score.
  const double mean_random = random_score_sum / 50;
  EXPECT_GT(mean_random, 350);
  EXPECT_LT(mean_random, 650);
  // No floor: exactly by score. Floor 1: every pick random, still each index once.
  const auto strict = labels::order_for_labelling(scores, 0.0, 7);
  for (size_t pos = 0; pos < n; ++pos) EXPECT_EQ(scores[strict[pos].index], static_cast<double>(n - 1 - pos));
  const auto all_random = labels::order_for_labelling(scores, 1.0, 7);
  std::set<size_t> distinct;
  for (const auto& p : all_random) {
    EXPECT_TRUE(p.random_floor);
    distinct.insert(p.index);
  }
  EXPECT_EQ(distinct.size(), n);
  // Equal scores are ordered at random, and the same seed orders them the same way.
  const std::vector<double> flat(50, 1.0);
  const auto a = labels::order_for_labelling(flat, 0.0, 1), b = labels::order_for_labelling(flat, 0.0, 1),
             c = labels::order_for_labelling(flat, 0.0, 2);
  std::vector<size_t> ia, ib, ic;
  for (size_t i = 0; i < flat.size(); ++i) ia.push_back(a[i].index), ib.push_back(b[i].index), ic.push_back(c[i].index);
  EXPECT_EQ(ia, ib);
  EXPECT_NE(ia, ic);
  EXPECT_FALSE(std::is_sorted(ia.begin(), ia.end()));
}

TEST(ActiveSelection, SpreadingOverPromptsTakesEveryPromptsBestBeforeAnyPromptsSecond) {
  //                               prompt 7: 10, 9, 8   prompt 3: 5, 4   prompt 5: 1
  const std::vector<double> scores = {9, 5, 10, 1, 4, 8};
  const std::vector<int64_t> groups = {7, 3, 7, 5, 3, 7};
  std::vector<double> order;
  for (const auto& p : labels::order_for_labelling(scores, 0.0, 3, groups)) order.push_back(scores[p.index]);
  EXPECT_EQ(order, (std::vector<double>{10, 5, 1, 9, 4, 8}));
  order.clear();
  for (const auto& p : labels::order_for_labelling(scores, 0.0, 3)) order.push_back(scores[p.index]);
  EXPECT_EQ(order, (std::vector<double>{10, 9, 8, 5, 4, 1})) << "without groups: by score alone";
  // The random floor is kept the same way: every second pick random.
  size_t random = 0;
  for (const auto& p : labels::order_for_labelling(scores, 0.5, 3, groups)) random += p.random_floor;
  EXPECT_EQ(random, 3u);
  EXPECT_NE(error_of([&] { labels::order_for_labelling(scores, 0.0, 3, {1, 2}); }).find("2 groups for 6 scores"),
            std::string::npos);
}

TEST(ActiveSelection, TheStoreServesByPriorityAndLabelsKeepTheStrategyThroughExportAndImport) {
  test::TempDir dir("select-store");
  LabelStore store(dir.file("l.sqlite"));
  for (int i = 0; i < 4; ++i) {
    const int64_t p = store.add_prompt(Json::array({{{"role", "user"}, {"content", "Order " + std::to_string(i)}}}), nullptr);
    store.add_comparison(p, {store.add_candidate(p, "yes " + std::to_string(i), true, "x", nullptr),
                             store.add_candidate(p, "no " + std::to_string(i), i != 2, "x", nullptr)});
  }
  // Comparison 3 first, then 1; 2 and 4 keep the default (oldest first).
  store.set_selection({{3, 2.0, "uncertainty", 0.93}, {1, 1.0, "random", 0.12}});
  std::vector<int64_t> order;
  for (const auto& c : store.open_comparisons()) order.push_back(c.id);
  EXPECT_EQ(order, (std::vector<int64_t>{3, 1, 2, 4}));
  const int64_t rater = store.add_rater("ann", "", "human");
  EXPECT_EQ(store.next_available(rater, 0.0)->id, 3);
  EXPECT_EQ(store.open_comparisons_for(rater, 1)[0].id, 3);

  // Each label keeps how its comparison was chosen.
  for (int64_t id : {3, 1, 2}) {
    Label l;
    l.comparison_id = id;
    l.rater_id = rater;
    l.choice = Choice::kA;
    l.shown_order = store.comparison(id).candidates;
    store.add_label(l);
  }
  const auto labels = store.labels();
  EXPECT_EQ(labels[0].selection, "uncertainty");
  EXPECT_DOUBLE_EQ(*labels[0].selection_score, 0.93);
  EXPECT_EQ(labels[1].selection, "random");
  EXPECT_EQ(labels[2].selection, "");
  EXPECT_FALSE(labels[2].selection_score.has_value());

  // Export writes it; importing that file elsewhere and exporting again gives the same rows.
  store.export_jsonl(dir.file("out.jsonl"));
  const auto rows = parse_lines(read_file(dir.file("out.jsonl")));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["selection"], (nlohmann::json{{"strategy", "uncertainty"}, {"score", 0.93}}));
  EXPECT_FALSE(rows[2].contains("selection"));
  LabelStore other(dir.file("other.sqlite"));
  other.import_jsonl(dir.file("out.jsonl"), "ann");
  other.export_jsonl(dir.file("again.jsonl"));
  EXPECT_EQ(parse_lines(read_file(dir.file("again.jsonl"))), rows);
  // A malformed selection names the line.
  write_file_atomic(dir.file("bad.jsonl"), R"({"prompt": "x", "chosen": "a", "rejected": "b", "selection": "uncertainty"})" "\n");
  EXPECT_NE(error_of([&] { other.import_jsonl(dir.file("bad.jsonl"), "bob"); }).find("bad.jsonl:1"), std::string::npos);
}

// A tiny SFT checkpoint and a store of its prompts, each with the agent's
// real reply and a curt one queued as a pair; with `cut_off`, also a reply
// cut in half, paired with both. The loop's config points at them.
labels::ActiveLoopConfig tiny_active_loop(test::TempDir& dir, bool cut_off) {
  const auto data = test::tiny_support_data(48, 4, 4);
  const Tokenizer tok = test::tiny_support_tokenizer(data, 400);
  labels::ActiveLoopConfig cfg;
  cfg.rm.init_from = test::write_tiny_checkpoint(dir.file("sft"), tok, 3, 128);
  cfg.db = dir.file("l.sqlite");
  cfg.out_dir = dir.file("active");
  cfg.eval_fraction = 0.2;
  cfg.rm.train.batch_size = 8;
  cfg.rm.train.threads = 1;
  cfg.rm.train.log_interval = 100;
  LabelStore store(cfg.db);
  for (const Json& row : data.train) {
    Json messages = row["messages"];
    const std::string good = messages.back()["content"].get<std::string>();
    if (good.size() < 20) continue;
    messages.erase(messages.size() - 1);
    const int64_t p = store.add_prompt(messages, row["metadata"]);
    const int64_t a = store.add_candidate(p, good, true, "sft", nullptr);
    const int64_t b = store.add_candidate(p, "Sorry.", true, "sft", nullptr);
    store.add_comparison(p, {a, b});
    if (!cut_off) continue;
    const int64_t c = store.add_candidate(p, good.substr(0, good.size() / 2), false, "sft", nullptr);
    store.add_comparison(p, {a, c});
    store.add_comparison(p, {b, c});
  }
  return cfg;
}

TEST(ActiveLabelling, RoundsLabelByTheStrategyOnTheLastRewardModelAndResume) {
  test::TempDir dir("active-loop");
  labels::ActiveLoopConfig cfg = tiny_active_loop(dir, /*cut_off=*/true);
  const std::string& db = cfg.db;
  cfg.strategy = "uncertainty";
  cfg.random_floor = 0.2;
  cfg.budgets = {20, 50};
  const auto points = labels::run_active_labelling(cfg);
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].labels, 20);
  EXPECT_EQ(points[1].labels, 50);
  EXPECT_GT(points[0].gold_pairs, 0u);
  EXPECT_EQ(points[0].gold_pairs, points[1].gold_pairs) << "one held-out set for every round";
  EXPECT_EQ(points[1].reward_models, (std::vector<std::string>{join_path(cfg.out_dir, "round2-rm1")}));

  LabelStore store(db);
  size_t first_round = 0, by_strategy = 0, by_floor = 0;
  double lowest_chosen = 1e9;
  std::set<int64_t> labelled;
  for (const Label& l : store.labels()) {
    labelled.insert(l.comparison_id);
    if (l.id <= points[0].last_label_id) {
      EXPECT_EQ(l.selection, "random") << "the first round has no reward model yet";
      ++first_round;
    } else if (l.selection == "uncertainty") {
      ++by_strategy;
      lowest_chosen = std::min(lowest_chosen, *l.selection_score);
    } else {
      EXPECT_EQ(l.selection, "random");
      ++by_floor;
    }
  }
  EXPECT_EQ(first_round, 20u);
  EXPECT_EQ(by_floor, 6u) << "floor(30 x 0.2) of the second round's 30 picks are random";
  EXPECT_EQ(by_strategy, 24u);
  // Picks by uncertainty took the most uncertain comparisons: none left open
  // scored higher. Held-out prompts were never labelled.
  size_t open_ranked = 0, held_out = 0;
  for (const auto& c : store.open_comparisons()) {
    if (c.selection == "uncertainty") {
      ++open_ranked;
      EXPECT_LE(*c.selection_score, lowest_chosen);
    }
  }
  for (const auto& c : store.comparisons()) {
    const bool held = held_out_prompt(
        prompt_from_json(Json{{"messages", store.prompt(c.prompt_id).messages}}, "", 0, ""), cfg.eval_fraction,
        static_cast<uint64_t>(cfg.rm.train.seed));
    held_out += held;
    if (held) {
      EXPECT_EQ(labelled.count(c.id), 0u);
    }
  }
  EXPECT_GT(open_ranked, 0u);
  EXPECT_GT(held_out, 0u);
  // The held-out prompts are those `rlhf rm train` holds out with the same
  // fraction and seed: none of the loop's labels lands there, and labelling
  // them (for measurement) fills exactly that side.
  int64_t last = 0;
  EXPECT_TRUE(split_by_prompt(labels::store_preferences(store, 0, &last), cfg.eval_fraction,
                              static_cast<uint64_t>(cfg.rm.train.seed)).second.empty());
  const size_t measuring = labels::label_held_out(store, cfg);
  EXPECT_GT(measuring, 0u);
  const auto split = split_by_prompt(labels::store_preferences(store, 0, &last), cfg.eval_fraction,
                                     static_cast<uint64_t>(cfg.rm.train.seed));
  EXPECT_EQ(split.first.size() + split.second.size(), 50u + measuring);
  EXPECT_EQ(split.first.size(), 50u);

  // Run again: the finished rounds are read back, nothing is labelled or trained twice.
  const auto again = labels::run_active_labelling(cfg);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[1].last_label_id, points[1].last_label_id);
  EXPECT_DOUBLE_EQ(again[1].gold_accuracy, points[1].gold_accuracy);
  EXPECT_EQ(store.count_labels(), 50u + measuring);
  // A different strategy in the same folder is refused.
  cfg.strategy = "random";
  EXPECT_NE(error_of([&] { labels::run_active_labelling(cfg); }).find("from another run"), std::string::npos);
}

// Selection settings for `strategy` on a tiny store after one random round
// of 20 labels, on that round's reward model.
labels::SelectConfig select_after_one_round(test::TempDir& dir, const std::string& strategy) {
  labels::ActiveLoopConfig cfg = tiny_active_loop(dir, /*cut_off=*/true);
  cfg.strategy = "random";
  cfg.budgets = {20};
  const auto points = labels::run_active_labelling(cfg);
  labels::SelectConfig sc;
  sc.db = cfg.db;
  sc.strategy = strategy;
  sc.reward_models = points.at(0).reward_models;
  sc.threads = 1;
  return sc;
}

// A pair's two scores and score-head inputs, from the reward model directly,
// one pair at a time, without shared prompts.
struct PairScores {
  std::vector<double> r;
  torch::Tensor h;  // [2, C]
};
PairScores score_pair(LoadedRewardModel& rm, labels::LabelStore& store, const labels::Comparison& c) {
  const ChatTemplate chat(rm.tokenizer);
  const Conversation prompt = prompt_from_json(Json{{"messages", store.prompt(c.prompt_id).messages}}, "", 0, "");
  const labels::Candidate a = store.candidate(c.candidates[0]), b = store.candidate(c.candidates[1]);
  PairScores out;
  out.r = score_replies(rm.model, chat, {&prompt, &prompt}, {&a.text, &b.text}, 2, torch::kCPU, {a.finished, b.finished},
                        /*share_prompts=*/false, &out.h);
  return out;
}

TEST(ActiveSelection, GradientScoresEachOpenPairByTheRewardModelsProbabilityAndFeatureDistance) {
  test::TempDir dir("active-gradient");
  labels::SelectConfig sc = select_after_one_round(dir, "gradient");
  sc.random_floor = 0;
  labels::LabelStore store(sc.db);
  const labels::SelectResult sel = labels::select_open_comparisons(store, sc, {});
  ASSERT_GT(sel.order.size(), 3u);
  // The recorded score of the first and the last pick, recomputed.
  LoadedRewardModel rm = load_reward_model(sc.reward_models[0], torch::kCPU);
  double first_score = 0;
  for (const int64_t id : {sel.order.front(), sel.order.back()}) {
    const labels::Comparison c = store.comparison(id);
    ASSERT_EQ(c.selection, "gradient");
    const PairScores s = score_pair(rm, store, c);
    ASSERT_EQ(s.h.size(0), 2);
    // The features are what the score head reads.
    EXPECT_NEAR(rm.model->score(s.h[0]).item<double>(), s.r[0], 1e-4);
    const double p = 1.0 / (1.0 + std::exp(-(s.r[0] - s.r[1])));
    const double expected = 2 * p * (1 - p) * (s.h[0] - s.h[1]).norm().item<double>();
    EXPECT_NEAR(*c.selection_score, expected, 1e-3 * std::max(1.0, expected)) << "comparison " << id;
    if (id == sel.order.front()) first_score = expected;
    else EXPECT_GE(first_score, expected) << "the highest expected gradient comes first";
  }
}

TEST(ActiveSelection, BadgeRecordsItsScoreAndPutsItsBatchFirstThenTheRestByScore) {
  test::TempDir dir("active-badge");
  labels::SelectConfig sc = select_after_one_round(dir, "badge");
  sc.random_floor = 0.2;
  sc.batch = 10;
  labels::LabelStore store(sc.db);
  sc.spread_prompts = true;
  EXPECT_NE(error_of([&] { labels::select_open_comparisons(store, sc, {}); }).find("spread_prompts"), std::string::npos);
  sc.spread_prompts = false;
  const labels::SelectResult sel = labels::select_open_comparisons(store, sc, {});
  ASSERT_GT(sel.order.size(), 20u);
  LoadedRewardModel rm = load_reward_model(sc.reward_models[0], torch::kCPU);
  size_t random_in_batch = 0;
  double last_after_batch = 1e300;
  for (size_t pos = 0; pos < sel.order.size(); ++pos) {
    const labels::Comparison c = store.comparison(sel.order[pos]);
    if (c.selection == "random") {
      random_in_batch += pos < 10;
      continue;
    }
    ASSERT_EQ(c.selection, "badge");
    if (pos >= 10) {
      EXPECT_LE(*c.selection_score, last_after_batch + 1e-12) << "after the batch, highest score first (position " << pos << ")";
      last_after_batch = *c.selection_score;
    }
    if (pos != 0 && pos != sel.order.size() - 1) continue;
    // The recorded score, recomputed.
    const PairScores s = score_pair(rm, store, c);
    const double q = 1.0 / (1.0 + std::exp(-std::abs(s.r[0] - s.r[1])));
    const double expected = (1 - q) * (s.h[0] - s.h[1]).norm().item<double>();
    EXPECT_NEAR(*c.selection_score, expected, 1e-3 * std::max(1.0, expected)) << "position " << pos;
  }
  EXPECT_EQ(random_in_batch, 2u) << "floor(10 x 0.2) of the batch are random picks";
}

TEST(ActiveLabelling, TrainOnAllRetrainsEachRoundFromTheStartOnEveryLabel) {
  test::TempDir dir("active-all");
  labels::ActiveLoopConfig cfg = tiny_active_loop(dir, /*cut_off=*/false);
  const std::string sft = cfg.rm.init_from;
  cfg.budgets = {10, 25};
  cfg.train_on = "all";
  const auto points = labels::run_active_labelling(cfg);
  ASSERT_EQ(points.size(), 2u);
  // The second round's reward model started from the SFT model, not from the
  // first round's, and saw all 25 labels, not the 15 new ones.
  const Json state = read_json_file(join_path(resolve_checkpoint(points[1].reward_models[0]), "trainer_state.json"));
  EXPECT_EQ(state["config"]["init_from"].get<std::string>(), sft);
  EXPECT_EQ(state["train_pairs"].get<size_t>(), 25u);
  EXPECT_EQ(state["last_label_id"].get<int64_t>(), points[1].last_label_id);
  // The folder remembers how it was trained: a rerun that continues instead is refused.
  cfg.train_on = "new";
  EXPECT_NE(error_of([&] { labels::run_active_labelling(cfg); }).find("train_on all"), std::string::npos);
  cfg.train_on = "every";
  EXPECT_NE(error_of([&] { labels::validate_active_config(cfg); }).find("train_on = 'every'"), std::string::npos);
}

TEST(ActiveLabelling, TrainOnSaysWhereEachRoundStartsAndWhichLabelsItSees) {
  struct Case {
    std::string train_on;
    bool from_last_round;  // else from the SFT model
    size_t pairs;          // the second round's training pairs, of 25 labels, 15 of them new
  };
  for (const Case& want : {Case{"new", true, 15}, Case{"replay", true, 25}}) {
    test::TempDir dir("active-" + want.train_on);
    labels::ActiveLoopConfig cfg = tiny_active_loop(dir, /*cut_off=*/false);
    cfg.budgets = {10, 25};
    cfg.train_on = want.train_on;
    const auto points = labels::run_active_labelling(cfg);
    ASSERT_EQ(points.size(), 2u);
    const Json state =
        read_json_file(join_path(resolve_checkpoint(points[1].reward_models[0]), "trainer_state.json"));
    EXPECT_EQ(state["config"]["init_from"].get<std::string>(),
              want.from_last_round ? points[0].reward_models[0] : cfg.rm.init_from)
        << want.train_on;
    EXPECT_EQ(state["train_pairs"].get<size_t>(), want.pairs) << want.train_on;
    EXPECT_EQ(state["last_label_id"].get<int64_t>(), points[1].last_label_id);
  }
}

TEST(GoldItems, OnlyComparisonsWithAClearAnswerBecomeGoldWithThatAnswer) {
  test::TempDir dir("gold-items");
  labels::LabelStore store(dir.file("l.sqlite"));
  const Json conv = Json::array({{{"role", "user"}, {"content", "Hi, I'm Maria. Where is my refund for order #48213?"}}});
  const int64_t p = store.add_prompt(conv, nullptr);
  const std::string good =
      "Hi Maria, thanks for reaching out. The refund for order #48213 has been issued to your original payment "
      "method. It takes 5-7 business days to appear. Is there anything else I can help you with?";
  const int64_t g = store.add_candidate(p, good, true, "x", nullptr);
  const int64_t bad = store.add_candidate(p, "Refund issued.", true, "x", nullptr);
  const int64_t close = store.add_candidate(p, good + " Thanks!", true, "x", nullptr);
  const int64_t clear = *store.add_comparison(p, {bad, g});
  const int64_t unclear = *store.add_comparison(p, {g, close});
  EXPECT_EQ(labels::mark_gold_items(store, 10, 3.0), 1u);
  const labels::Comparison c = store.comparison(clear);
  EXPECT_TRUE(c.is_gold);
  EXPECT_EQ(c.gold_answer["choice"], "b") << "the second stored candidate is the good one";
  EXPECT_FALSE(store.comparison(unclear).is_gold);
}

}  // namespace
}  // namespace rlhf

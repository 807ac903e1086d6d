// The label service: rater tokens, task assignment (the rating desk),
// agreement statistics, and the Boost.Asio + Cap'n Proto server on loopback
// (concurrent raters, wrong tokens, hostile frames, SIGKILL and restart).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/fs.h"
#include "labels/agreement.h"
#include "labels/desk.h"
#include "labels/service.h"
#include "labels/sqlite.h"
#include "labels/token.h"
#include "labels/wire.h"
#include "label_fixture.h"
#include "process_util.h"
#include "test_util.h"

using namespace rlhf;
using namespace rlhf::labels;

// ------------------------------------------------------------------ tokens

TEST(RaterTokens, Sha256MatchesTheFipsTestVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(RaterTokens, TokensAreRandomAndOnlyTheirHashIsStored) {
  test::TempDir dir("tokens");
  LabelStore store(dir.file("l.sqlite"));
  const std::string t1 = test::add_rater_with_token(store, "ann");
  const std::string t2 = test::add_rater_with_token(store, "bob");
  EXPECT_EQ(t1.size(), 64u);
  EXPECT_NE(t1, t2);
  RatingDesk desk(store, {});
  EXPECT_EQ(desk.authenticate(t1)->name, "ann");
  EXPECT_EQ(desk.authenticate(t2)->name, "bob");
  EXPECT_FALSE(desk.authenticate(t1.substr(0, 63) + (t1.back() == '0' ? "1" : "0"))) << "one digit off";
  EXPECT_FALSE(desk.authenticate(""));
  const std::string bytes = read_file(dir.file("l.sqlite"));
  EXPECT_EQ(bytes.find(t1), std::string::npos) << "the token itself must not be stored";
}

// --------------------------------------------------------------- agreement

TEST(Agreement, CohenKappaMatchesAHandComputedCase) {
  // po = 4/6, pe = 0.5*0.5 + 0.5*0.5 = 0.5, kappa = (2/3 - 1/2) / (1/2) = 1/3.
  EXPECT_NEAR(cohen_kappa({0, 0, 1, 1, 0, 1}, {0, 1, 1, 1, 0, 0}), 1.0 / 3, 1e-12);
  EXPECT_NEAR(cohen_kappa({0, 1, 2}, {0, 1, 2}), 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(cohen_kappa({}, {})));
}

TEST(Agreement, KrippendorffAlphaMatchesAHandComputedCase) {
  // Coincidences: o00 = 2, o11 = 2, o01 = o10 = 1; n0 = n1 = 3, n = 6.
  // alpha = 1 - (n - 1) * 2 / (2 * 3 * 3) = 1 - 10/18.
  EXPECT_NEAR(krippendorff_alpha_nominal({{0, 0}, {1, 1}, {0, 1}}), 1 - 10.0 / 18, 1e-12);
  // Units with one value are not pairable and change nothing.
  EXPECT_NEAR(krippendorff_alpha_nominal({{0, 0}, {1, 1}, {0, 1}, {1}}), 1 - 10.0 / 18, 1e-12);
  EXPECT_NEAR(krippendorff_alpha_nominal({{0, 0}, {1, 1}}), 1.0, 1e-12);
  // Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal example: 0.743.
  const std::vector<std::vector<int>> units = {{1, 1, 1}, {2, 2, 3, 2}, {3, 3, 3, 3}, {3, 3, 3, 3}, {2, 2, 2, 2},
                                               {1, 2, 3, 4}, {4, 4, 4, 4}, {1, 1, 2, 1}, {2, 2, 2, 2}, {5, 5, 5},
                                               {1, 1}, {3}};
  EXPECT_NEAR(krippendorff_alpha_nominal(units), 0.743, 1e-3);
}

TEST(Agreement, ReportCountsLabelsKappaAndGoldAccuracyPerRater) {
  test::TempDir dir("agree");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 4, 2);
  const int64_t ann = store.add_rater("ann", "", "human"), bob = store.add_rater("bob", "", "human");
  const auto comps = store.comparisons();
  const Choice ann_choices[] = {Choice::kA, Choice::kA, Choice::kB, Choice::kB};
  const Choice bob_choices[] = {Choice::kA, Choice::kB, Choice::kB, Choice::kB};
  for (size_t i = 0; i < 4; ++i) {
    Label a, b;
    a.comparison_id = b.comparison_id = comps[i].id;
    a.rater_id = ann, a.choice = ann_choices[i];
    b.rater_id = bob, b.choice = bob_choices[i];
    a.shown_order = b.shown_order = comps[i].candidates;
    store.add_label(a);
    store.add_label(b);
  }
  const int64_t p = store.add_prompt(Json::array({{{"role", "user"}, {"content", "gold"}}}), nullptr);
  const int64_t c1 = store.add_candidate(p, "good", true, "x", nullptr), c2 = store.add_candidate(p, "bad", true, "x", nullptr);
  const int64_t gold = *store.add_comparison(p, {c1, c2}, 1, true, Json{{"choice", "a"}});
  Label g;
  g.comparison_id = gold, g.rater_id = ann, g.choice = Choice::kB, g.shown_order = {c1, c2};
  store.add_label(g);

  const AgreementReport r = agreement_report(store);
  ASSERT_EQ(r.raters.size(), 2u);
  EXPECT_EQ(r.raters[0].labels, 5u);
  EXPECT_EQ(r.raters[0].gold_seen, 1u);
  EXPECT_EQ(r.raters[0].gold_correct, 0u);
  ASSERT_EQ(r.pairs.size(), 1u);
  EXPECT_EQ(r.pairs[0].common, 4u);
  EXPECT_DOUBLE_EQ(r.pairs[0].agree, 0.75);
  // po = 3/4; ann 2a 2b, bob 1a 3b: pe = .5*.25 + .5*.75 = .5; kappa = .5.
  EXPECT_NEAR(r.pairs[0].kappa, 0.5, 1e-12);
  EXPECT_EQ(r.alpha_units, 4u);
  EXPECT_NE(format_agreement(r).find("Krippendorff"), std::string::npos);
}

// -------------------------------------------------------------------- desk

namespace {
// A store of `pairs` single-rater comparisons, the rater ann, and a desk.
struct DeskWithAnn {
  DeskWithAnn(const std::string& name, int pairs) : dir(name), store(dir.file("l.sqlite")) {
    test::fill_label_store(store, pairs, 1);
    store.add_rater("ann", "", "human");
    ann = *store.rater_by_name("ann");
  }
  test::TempDir dir;
  LabelStore store;
  RatingDesk desk{store, {}};
  Rater ann;
};

Label left_better_of(const RatingTask& t, const std::string& client_id) {
  Label l;
  l.comparison_id = t.comparison_id;
  l.choice = Choice::kA;
  l.client_id = client_id;
  for (auto& r : t.replies) l.shown_order.push_back(r.candidate_id);
  return l;
}
}  // namespace

TEST(RatingDesk, EachComparisonGetsItsRatersAndNeverTheSameRaterTwice) {
  test::TempDir dir("desk");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 6, 2);
  store.add_rater("ann", "", "human");
  store.add_rater("bob", "", "human");
  store.add_rater("cy", "", "human");
  RatingDesk desk(store, {});
  const Rater ann = *store.rater_by_name("ann"), bob = *store.rater_by_name("bob"), cy = *store.rater_by_name("cy");
  auto label_all = [&](const Rater& r) {
    int n = 0;
    while (auto t = desk.next_task(r)) {
      Label l;
      l.comparison_id = t->comparison_id;
      l.choice = Choice::kA;
      for (auto& rep : t->replies) l.shown_order.push_back(rep.candidate_id);
      desk.submit(r, l);
      ++n;
    }
    return n;
  };
  EXPECT_EQ(label_all(ann), 6);
  EXPECT_EQ(label_all(bob), 6);
  EXPECT_EQ(label_all(cy), 0) << "every comparison already has its 2 raters";
  EXPECT_EQ(store.count_labels(), 12u);
  // A second label by the same rater is refused.
  Label again;
  again.comparison_id = store.comparisons()[0].id;
  again.choice = Choice::kB;
  again.shown_order = store.comparisons()[0].candidates;
  EXPECT_NE(test::error_of([&] { desk.submit(ann, again); }).find("already labelled"), std::string::npos);
}

TEST(RatingDesk, AHandedOutTaskIsHeldForItsRater) {
  test::TempDir dir("lease");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 2, 1);
  store.add_rater("ann", "", "human");
  store.add_rater("bob", "", "human");
  RatingDesk desk(store, {});
  const auto a = desk.next_task(*store.rater_by_name("ann"));
  const auto b = desk.next_task(*store.rater_by_name("bob"));
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->comparison_id, b->comparison_id);
  EXPECT_EQ(desk.next_task(*store.rater_by_name("ann"))->comparison_id, a->comparison_id) << "stable for its rater";
}

TEST(RatingDesk, LeftRightOrderIsRandomisedPerRaterStableAndRecorded) {
  test::TempDir dir("order");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 40, 1);
  store.add_rater("ann", "", "human");
  RatingDesk desk(store, {});
  const Rater ann = *store.rater_by_name("ann");
  int swapped = 0;
  for (int i = 0; i < 40; ++i) {
    const auto t = desk.next_task(ann);
    ASSERT_TRUE(t);
    const Comparison c = store.comparison(t->comparison_id);
    const bool left_is_stored_a = t->replies[0].candidate_id == c.candidates[0];
    swapped += !left_is_stored_a;
    // The rater prefers the left reply ("a" = left as shown).
    Label l;
    l.comparison_id = t->comparison_id;
    l.choice = Choice::kA;
    l.shown_order = {t->replies[0].candidate_id, t->replies[1].candidate_id};
    const int64_t id = desk.submit(ann, l);
    const Label stored = store.labels_of_comparison(c.id).at(0);
    EXPECT_EQ(stored.id, id);
    EXPECT_EQ(stored.choice, left_is_stored_a ? Choice::kA : Choice::kB) << "the left reply is what won";
    EXPECT_EQ(stored.shown_order, l.shown_order);
  }
  EXPECT_GT(swapped, 8);
  EXPECT_LT(swapped, 32);
}

TEST(RatingDesk, RanksAndRatingsAsShownAreStoredPerCandidate) {
  test::TempDir dir("rank");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 0, 1, 1);
  store.add_rater("ann", "", "human");
  DeskConfig cfg;
  cfg.ask_ratings = true;
  RatingDesk desk(store, cfg);
  const Rater ann = *store.rater_by_name("ann");
  const auto t = desk.next_task(ann);
  ASSERT_TRUE(t && t->ranking && t->ask_ratings);
  Label l;
  l.comparison_id = t->comparison_id;
  l.choice = Choice::kRanking;
  for (auto& r : t->replies) l.shown_order.push_back(r.candidate_id);
  l.ranking = {1, 3, 2};  // as shown
  l.ratings = {7, 1, 4};
  desk.submit(ann, l);
  const Comparison c = store.comparison(t->comparison_id);
  const Label s = store.labels().at(0);
  for (size_t j = 0; j < 3; ++j) {
    const size_t i = std::find(c.candidates.begin(), c.candidates.end(), l.shown_order[j]) - c.candidates.begin();
    EXPECT_EQ(s.ranking[i], l.ranking[j]);
    EXPECT_EQ(s.ratings[i], l.ratings[j]);
  }
  Label bad = l;
  bad.ranking = {1, 4, 2};
  EXPECT_NE(test::error_of([&] { desk.submit(ann, bad); }).find("out of range"), std::string::npos);
}

// A pair labelled with a ranking of the wrong length was read past the end
// of that list and heap contents stored as ranks (issue "Hardening").
TEST(RatingDesk, ListsThatDoNotFitTheTaskAreRefusedBeforeUse) {
  test::TempDir dir("shape");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 1, 1);
  store.add_rater("ann", "", "human");
  RatingDesk desk(store, {});
  const Rater ann = *store.rater_by_name("ann");
  const auto t = desk.next_task(ann);
  ASSERT_TRUE(t && !t->ranking);
  Label l;
  l.comparison_id = t->comparison_id;
  l.choice = Choice::kA;
  for (auto& r : t->replies) l.shown_order.push_back(r.candidate_id);
  for (const std::vector<int>& ranking : {std::vector<int>{1}, std::vector<int>{1, 2}, std::vector<int>{2, 1, 3}}) {
    Label bad = l;
    bad.ranking = ranking;
    EXPECT_NE(test::error_of([&] { desk.submit(ann, bad); }).find("send no ranking"), std::string::npos);
  }
  Label short_ratings = l;
  short_ratings.ratings = {5};
  EXPECT_NE(test::error_of([&] { desk.submit(ann, short_ratings); }).find("one 1-7 rating per reply"), std::string::npos);
  EXPECT_EQ(store.count_labels(), 0u);
  desk.submit(ann, l);
  EXPECT_EQ(store.count_labels(), 1u);
  EXPECT_TRUE(store.labels().at(0).ranking.empty());
}

TEST(RatingDesk, GoldItemsAreMixedInAndScored) {
  test::TempDir dir("gold");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 20, 1);
  const int64_t p = store.add_prompt(Json::array({{{"role", "user"}, {"content", "gold"}}}), nullptr);
  const int64_t good = store.add_candidate(p, "good", true, "x", nullptr), bad = store.add_candidate(p, "bad", true, "x", nullptr);
  const int64_t gold = *store.add_comparison(p, {good, bad}, 1, true, Json{{"choice", "a"}});
  store.add_rater("ann", "", "human");
  DeskConfig cfg;
  cfg.gold_rate = 1.0;
  RatingDesk desk(store, cfg);
  const Rater ann = *store.rater_by_name("ann");
  const auto t = desk.next_task(ann);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->comparison_id, gold);
  Label l;
  l.comparison_id = gold;
  l.shown_order = {t->replies[0].candidate_id, t->replies[1].candidate_id};
  l.choice = t->replies[0].candidate_id == good ? Choice::kA : Choice::kB;  // picks "good" as shown
  desk.submit(ann, l);
  const RaterProgress pr = desk.progress(ann);
  EXPECT_EQ(pr.gold_seen, 1u);
  EXPECT_EQ(pr.gold_correct, 1u);
  EXPECT_EQ(pr.remaining, 20u);
  EXPECT_NE(desk.next_task(ann)->comparison_id, gold) << "a gold item is shown to a rater once";
}

// A label for a comparison never handed to the rater, or one already
// closed, was acknowledged and stored (issue "Hardening").
TEST(RatingDesk, OnlyTasksHandedToTheRaterThatStillNeedLabelsMayBeLabelled) {
  test::TempDir dir("offered");
  LabelStore store(dir.file("l.sqlite"));
  test::fill_label_store(store, 3, 1);
  store.add_rater("ann", "", "human");
  store.add_rater("bob", "", "human");
  DeskConfig cfg;
  cfg.lease_seconds = 1;
  RatingDesk desk(store, cfg);
  const Rater ann = *store.rater_by_name("ann"), bob = *store.rater_by_name("bob");
  const std::vector<Comparison> all = store.comparisons();
  auto label_of = [](const Comparison& c, const std::string& client_id) {
    Label l;
    l.comparison_id = c.id;
    l.choice = Choice::kA;
    l.shown_order = c.candidates;
    l.client_id = client_id;
    return l;
  };
  // Never handed out: refused, nothing stored.
  EXPECT_NE(test::error_of([&] { desk.submit(ann, label_of(all[2], "x")); }).find("was not handed to you"),
            std::string::npos);
  EXPECT_EQ(store.count_labels(), 0u);
  // Ann's hold expires, Bob takes and labels the comparison: Ann's late
  // label finds it closed.
  const auto t = desk.next_task(ann);
  ASSERT_TRUE(t);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  const auto tb = desk.next_task(bob);
  ASSERT_TRUE(tb);
  EXPECT_EQ(tb->comparison_id, t->comparison_id) << "an expired hold frees the task";
  desk.submit(bob, left_better_of(*tb, "b1"));
  EXPECT_NE(test::error_of([&] { desk.submit(ann, left_better_of(*t, "a1")); }).find("already has its 1 label"),
            std::string::npos);
  EXPECT_EQ(store.count_labels(), 1u);
  // Handed out and open: stored, even after the hold expired.
  const auto t2 = desk.next_task(ann);
  ASSERT_TRUE(t2);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_GT(desk.submit(ann, left_better_of(*t2, "a2")), 0);
  EXPECT_EQ(store.count_labels(), 2u);
}

// A client id reused for a different label answered with the old label's
// id and dropped the new one (issue "Hardening").
TEST(RatingDesk, AClientIdNamesOneLabel) {
  DeskWithAnn w("clientid", 2);
  RatingDesk& desk = w.desk;
  LabelStore& store = w.store;
  const Rater& ann = w.ann;
  const auto t1 = desk.next_task(ann);
  const int64_t id = desk.submit(ann, left_better_of(*t1, "same"));
  EXPECT_EQ(desk.submit(ann, left_better_of(*t1, "same")), id) << "a resend";
  Label changed = left_better_of(*t1, "same");
  changed.choice = Choice::kB;
  EXPECT_NE(test::error_of([&] { desk.submit(ann, changed); }).find("already used for a different label"),
            std::string::npos);
  const auto t2 = desk.next_task(ann);
  ASSERT_TRUE(t2);
  EXPECT_NE(t2->comparison_id, t1->comparison_id);
  EXPECT_NE(test::error_of([&] { desk.submit(ann, left_better_of(*t2, "same")); }).find("different label"),
            std::string::npos);
  EXPECT_EQ(store.count_labels(), 1u);
  EXPECT_EQ(store.labels().at(0).choice, store.comparison(t1->comparison_id).candidates[0] == t1->replies[0].candidate_id
                                             ? Choice::kA
                                             : Choice::kB);
  EXPECT_GT(desk.submit(ann, left_better_of(*t2, "other")), id);
}

// Rationales of any size were stored (200 MB in 19 s) (issue "Hardening").
TEST(RatingDesk, FieldSizesAreCapped) {
  DeskWithAnn w("caps", 1);
  RatingDesk& desk = w.desk;
  LabelStore& store = w.store;
  const Rater& ann = w.ann;
  const auto t = desk.next_task(ann);
  Label l = left_better_of(*t, "r");
  l.rationale = std::string(5000, 'x');
  EXPECT_NE(test::error_of([&] { desk.submit(ann, l); }).find("max_rationale_bytes"), std::string::npos);
  l.rationale = "clear";
  l.client_id = std::string(200, 'c');
  EXPECT_NE(test::error_of([&] { desk.submit(ann, l); }).find("client id"), std::string::npos);
  EXPECT_NE(test::error_of([&] { desk.next_task(ann, std::vector<int64_t>(kMaxExclude + 1, 7)); }).find("at most"),
            std::string::npos);
  EXPECT_EQ(store.count_labels(), 0u);
}

// Leases lived in one server's memory: two servers on one store gave 185 of
// 450 single-rater comparisons two labels (issue "Hardening"). Offers live in
// the store, so two desks (two processes) agree, and a restarted service
// accepts the task it handed out before.
TEST(RatingDesk, OffersLiveInTheStoreSoDesksAgree) {
  test::TempDir dir("twodesks");
  {
    LabelStore store(dir.file("l.sqlite"));
    test::fill_label_store(store, 30, 1);
    store.add_rater("ann", "", "human");
    store.add_rater("bob", "", "human");
  }
  LabelStore store_a(dir.file("l.sqlite")), store_b(dir.file("l.sqlite"));
  RatingDesk desk_a(store_a, {}), desk_b(store_b, {});
  const Rater ann = *store_a.rater_by_name("ann"), bob = *store_a.rater_by_name("bob");
  for (int i = 0;; ++i) {
    const auto ta = desk_a.next_task(ann);
    const auto tb = desk_b.next_task(bob);
    if (!ta && !tb) break;
    if (ta && tb) {
      EXPECT_NE(ta->comparison_id, tb->comparison_id);
    }
    // Labelled through the other desk: what one handed out, the other knows.
    if (ta) desk_b.submit(ann, left_better_of(*ta, "a" + std::to_string(i)));
    if (tb) desk_a.submit(bob, left_better_of(*tb, "b" + std::to_string(i)));
  }
  EXPECT_EQ(store_a.count_labels(), 30u);
  for (const Comparison& c : store_a.comparisons()) EXPECT_EQ(store_a.label_count(c.id), 1u) << c.id;
  EXPECT_EQ(desk_a.progress(ann).labels + desk_b.progress(bob).labels, 30u);
}

// ------------------------------------------------------------------ server

namespace {

std::string read_file_if_exists(const std::string& path) { return path_exists(path) ? read_file(path) : ""; }

// A server on a free loopback port, run on its own thread.
struct ServerThread {
  explicit ServerThread(const std::string& db, DeskConfig desk = {}, ServiceConfig c = {}) {
    c.db = db;
    c.port = 0;
    c.max_frame_bytes = 64 * 1024;
    c.desk = desk;
    server = std::make_unique<LabelServer>(c);
    port = server->port();
    thread = std::thread([this] { server->run(); });
  }
  ~ServerThread() {
    server->stop();
    thread.join();
  }
  std::unique_ptr<LabelServer> server;
  int port = 0;
  std::thread thread;
};

// A raw TCP connection for sending hostile bytes.
struct RawSocket {
  explicit RawSocket(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  }
  ~RawSocket() { ::close(fd); }
  void send(const std::string& bytes) { ASSERT_EQ(::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL), (ssize_t)bytes.size()); }
  // Everything until the server closes the connection (or 5 s pass).
  std::string read_until_closed() {
    std::string out;
    char buf[4096];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        closed = n == 0;
        return out;
      }
      out.append(buf, static_cast<size_t>(n));
    }
  }
  int fd = -1;
  bool closed = false;
};

std::string frame_header(uint32_t n) {
  std::string h(4, '\0');
  for (int i = 0; i < 4; ++i) h[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return h;
}

std::string hello_frame(const std::string& token) {
  capnp::MallocMessageBuilder m;
  m.initRoot<wire::Request>().initHello().setToken(text(token));
  return encode_frame(m);
}

// The error text of the first frame in `bytes` (which must be an error response).
std::string error_in(const std::string& bytes) {
  if (bytes.size() < 4) return "";
  const uint32_t n = decode_frame_length(reinterpret_cast<const uint8_t*>(bytes.data()));
  DecodedMessage m(bytes.substr(4, n), 1 << 20);
  auto r = m.root<wire::Response>();
  return r.which() == wire::Response::ERROR ? to_std(r.getError()) : "";
}

}  // namespace

TEST(LabelService, ManyConcurrentRatersLoseNoLabel) {
  test::TempDir dir("svc-many");
  std::vector<std::string> tokens;
  {
    LabelStore store(dir.file("l.sqlite"));
    test::fill_label_store(store, 30, 3);
    for (int r = 0; r < 8; ++r) tokens.push_back(test::add_rater_with_token(store, "rater" + std::to_string(r)));
  }
  ServerThread server(dir.file("l.sqlite"));
  std::atomic<int> acked{0};
  std::vector<std::thread> raters;
  for (int r = 0; r < 8; ++r)
    raters.emplace_back([&, r] {
      LabelClient c("127.0.0.1", server.port, tokens[r]);
      int n = 0;
      while (auto t = c.next_task()) {
        c.submit(left_better_of(*t, "r" + std::to_string(r) + "-" + std::to_string(n++)));
        ++acked;
      }
    });
  for (auto& t : raters) t.join();
  LabelStore store(dir.file("l.sqlite"));
  EXPECT_EQ(acked.load(), 90) << "30 comparisons x 3 raters";
  EXPECT_EQ(store.count_labels(), 90u);
  std::set<std::pair<int64_t, int64_t>> seen;
  std::map<int64_t, int> per_comparison;
  for (const Label& l : store.labels()) {
    EXPECT_TRUE(seen.insert({l.rater_id, l.comparison_id}).second) << "a rater labelled a comparison twice";
    ++per_comparison[l.comparison_id];
  }
  for (auto& [c, n] : per_comparison) EXPECT_EQ(n, 3) << "comparison " << c;
}

TEST(LabelService, AWrongTokenGetsAnErrorAndNothingElse) {
  test::TempDir dir("svc-token");
  {
    LabelStore store(dir.file("l.sqlite"));
    test::fill_label_store(store, 3, 1);
    test::add_rater_with_token(store, "ann");
  }
  ServerThread server(dir.file("l.sqlite"));
  const std::string err = test::error_of([&] { LabelClient c("127.0.0.1", server.port, std::string(64, 'f')); });
  EXPECT_NE(err.find("unknown rater token"), std::string::npos) << err;
  // Raw: a wrong hello followed by a task request gets one error and a closed connection.
  RawSocket s(server.port);
  capnp::MallocMessageBuilder m;
  m.initRoot<wire::Request>().initNextTask();
  s.send(hello_frame("nope") + encode_frame(m));
  const std::string got = s.read_until_closed();
  EXPECT_TRUE(s.closed);
  EXPECT_NE(error_in(got).find("unknown rater token"), std::string::npos);
  EXPECT_EQ(got.size(), 4 + decode_frame_length(reinterpret_cast<const uint8_t*>(got.data())))
      << "exactly one frame: no task leaked";
  // Asking for work before hello is refused the same way.
  RawSocket s2(server.port);
  s2.send(encode_frame(m));
  EXPECT_NE(error_in(s2.read_until_closed()).find("hello"), std::string::npos);
}

TEST(LabelService, HostileFramesCloseOnlyTheirOwnConnection) {
  test::TempDir dir("svc-hostile");
  const std::string token = test::store_with_rater(dir.file("l.sqlite"), 5);
  ServerThread server(dir.file("l.sqlite"));
  LabelClient good("127.0.0.1", server.port, token);
  ASSERT_TRUE(good.next_task());

  {  // garbage bytes in a well-sized frame
    RawSocket s(server.port);
    s.send(frame_header(16) + std::string("\xff\xee\xdd\xcc\xbb\xaa\x99\x88\x77\x66\x55\x44\x33\x22\x11\x00", 16));
    const std::string got = s.read_until_closed();
    EXPECT_TRUE(s.closed);
    EXPECT_FALSE(error_in(got).empty());
  }
  {  // not a whole number of words
    RawSocket s(server.port);
    s.send(frame_header(5) + "hello");
    EXPECT_NE(error_in(s.read_until_closed()).find("8-byte words"), std::string::npos);
  }
  {  // oversized
    RawSocket s(server.port);
    s.send(frame_header(50u << 20));
    const std::string got = s.read_until_closed();
    EXPECT_TRUE(s.closed);
    EXPECT_NE(error_in(got).find("outside"), std::string::npos);
  }
  {  // truncated: the header promises more than ever comes
    RawSocket s(server.port);
    s.send(frame_header(64) + std::string(10, 'x'));
    ::shutdown(s.fd, SHUT_WR);
    s.read_until_closed();
    EXPECT_TRUE(s.closed);
  }
  {  // a segment table that points past the frame
    RawSocket s(server.port);
    std::string body(16, '\0');
    body[4] = static_cast<char>(0xff);  // segment 0 claims 255 words
    s.send(frame_header(16) + body);
    EXPECT_FALSE(error_in(s.read_until_closed()).empty());
  }
  // The well-behaved rater never noticed.
  const auto t = good.next_task();
  ASSERT_TRUE(t);
  EXPECT_GT(good.submit(left_better_of(*t, "ok-1")), 0);
  EXPECT_EQ(good.stats().labels, 1u);
}

// Before hello a client could declare a 1 MiB frame and send nothing; the
// server zero-filled it (1,000 such connections: 160 MB -> 1.19 GB) and
// kept the connection 15 minutes (issue "Hardening").
TEST(LabelService, UnauthenticatedConnectionsAreCheapAndShortLived) {
  test::TempDir dir("svc-prehello");
  const std::string token = test::store_with_rater(dir.file("l.sqlite"), 3);
  ServiceConfig cfg;
  cfg.hello_timeout_s = 1;
  cfg.max_connections_per_address = 8;
  ServerThread server(dir.file("l.sqlite"), {}, cfg);
  {  // a large frame before hello is refused at its header
    RawSocket s(server.port);
    s.send(frame_header(60000));
    const std::string got = s.read_until_closed();
    EXPECT_TRUE(s.closed);
    EXPECT_NE(error_in(got).find("before hello"), std::string::npos) << error_in(got);
  }
  {  // silence before hello ends the connection after hello_timeout_s
    RawSocket s(server.port);
    const auto t0 = std::chrono::steady_clock::now();
    s.read_until_closed();
    EXPECT_TRUE(s.closed);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(4));
  }
  {  // past the per-address cap new connections are closed at once; an
     // honest rater gets in again as soon as the others are gone
    std::vector<std::unique_ptr<RawSocket>> held;
    for (int i = 0; i < 8; ++i) held.push_back(std::make_unique<RawSocket>(server.port));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    RawSocket extra(server.port);
    extra.read_until_closed();
    EXPECT_TRUE(extra.closed);
    held.clear();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    LabelClient ok("127.0.0.1", server.port, token);
    EXPECT_TRUE(ok.next_task());
  }
}

// Tokens can be revoked and rotated from the command line; labels stay.
TEST(RaterTokens, RevokeAndRotate) {
  test::TempDir dir("tokens");
  const std::string db = dir.file("l.sqlite");
  ASSERT_EQ(test::run_cli({"raters", "add", "ann", "--db", db}, dir.file("add.log")), 0);
  const std::string add = read_file(dir.file("add.log"));
  const std::string old_token = add.substr(add.find("token: ") + 7, 64);
  ASSERT_EQ(test::run_cli({"raters", "rotate", "ann", "--db", db}, dir.file("rotate.log")), 0);
  const std::string rot = read_file(dir.file("rotate.log"));
  const std::string new_token = rot.substr(rot.find("new token: ") + 11, 64);
  EXPECT_NE(old_token, new_token);
  {
    LabelStore store(db);
    RatingDesk desk(store, {});
    EXPECT_FALSE(desk.authenticate(old_token));
    ASSERT_TRUE(desk.authenticate(new_token));
    EXPECT_EQ(desk.authenticate(new_token)->name, "ann");
  }
  ASSERT_EQ(test::run_cli({"raters", "revoke", "ann", "--db", db}, dir.file("revoke.log")), 0);
  {
    LabelStore store(db);
    RatingDesk desk(store, {});
    EXPECT_FALSE(desk.authenticate(new_token));
    EXPECT_TRUE(store.rater_by_name("ann")) << "the rater and their labels stay";
  }
  EXPECT_NE(test::run_cli({"raters", "revoke", "nobody", "--db", db}, dir.file("none.log")), 0);
  EXPECT_NE(read_file(dir.file("none.log")).find("no rater named 'nobody'"), std::string::npos);
}

// Two servers on one store each kept their own leases (185 of 450
// single-rater comparisons got two labels): the second is refused.
TEST(LabelService, ASecondServerOnTheSameStoreIsRefused) {
  test::TempDir dir("svc-two");
  test::store_with_rater(dir.file("l.sqlite"), 2);
  ServerThread first(dir.file("l.sqlite"));
  ServiceConfig c;
  c.db = dir.file("l.sqlite");
  c.port = 0;
  const std::string msg = test::error_of([&] { LabelServer second(c); });
  EXPECT_NE(msg.find("another `rlhf serve-labels` is serving"), std::string::npos) << msg;
}

namespace {
// `rlhf serve-labels` as a child process on a free port, its output in
// `log`; `shell_setup` (e.g. "ulimit -n 40") runs before it in a shell.
struct ServeLabelsProcess {
  ServeLabelsProcess(const std::string& db, std::string log_path, const std::string& shell_setup = "")
      : log(std::move(log_path)) {
    ::remove(log.c_str());
    pid = shell_setup.empty()
              ? test::spawn_cli({"serve-labels", "--db", db, "--port", "0"}, log)
              : test::spawn_program({"/bin/sh", "-c", shell_setup + "; exec \"$0\" serve-labels --db \"$1\" --port 0",
                                     test::cli_path(), db},
                                    log);
    port = test::wait_for_port(log, "127.0.0.1:");
  }
  ~ServeLabelsProcess() {
    if (pid > 0) end(SIGKILL);
  }
  // Sends `signal` and returns the exit status (128 + signal when killed).
  int end(int signal) {
    ::kill(pid, signal);
    const int status = test::wait_exit(pid);
    pid = -1;
    return status;
  }
  std::string output() const { return read_file_if_exists(log); }
  // SIGTERM, then everything the server wrote.
  std::string stop() {
    end(SIGTERM);
    return output();
  }
  std::string log;
  pid_t pid = -1;
  int port = 0;
};
}  // namespace

// A newline in hello's client text forged a log line.
TEST(LabelService, ClientTextIsLoggedOnOneLine) {
  test::TempDir dir("svc-logline");
  const std::string token = test::store_with_rater(dir.file("l.sqlite"), 1);
  ServeLabelsProcess server(dir.file("l.sqlite"), dir.file("serve.log"));
  ASSERT_GT(server.port, 0) << server.output();
  {
    RawSocket s(server.port);
    capnp::MallocMessageBuilder m;
    auto hello = m.initRoot<wire::Request>().initHello();
    hello.setToken(token.c_str());
    hello.setClient("rater\nlabel service: rater 'admin' connected");
    s.send(encode_frame(m));
    char buf[256];
    ::recv(s.fd, buf, sizeof buf, 0);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string text = server.stop();
  EXPECT_EQ(text.find("\nlabel service: rater 'admin'"), std::string::npos) << text;
  EXPECT_NE(text.find("rater?label service"), std::string::npos) << text;
}

TEST(LabelService, AcknowledgedLabelsSurviveSigkillAndResendsAreNotDoubled) {
  test::TempDir dir("svc-kill");
  const std::string token = test::store_with_rater(dir.file("l.sqlite"), 40);
  std::vector<Label> sent;
  std::vector<int64_t> acks;
  {
    ServeLabelsProcess first(dir.file("l.sqlite"), dir.file("s1.log"));
    ASSERT_GT(first.port, 0) << first.output();
    LabelClient c("127.0.0.1", first.port, token);
    for (int i = 0; i < 25; ++i) {
      const auto t = c.next_task();
      ASSERT_TRUE(t);
      sent.push_back(left_better_of(*t, "kill-" + std::to_string(i)));
      acks.push_back(c.submit(sent.back()));
    }
    EXPECT_EQ(first.end(SIGKILL), 128 + SIGKILL);
  }
  ServeLabelsProcess second(dir.file("l.sqlite"), dir.file("s2.log"));
  ASSERT_GT(second.port, 0) << second.output();
  {
    LabelStore store(dir.file("l.sqlite"));
    EXPECT_EQ(store.count_labels(), 25u) << "every acknowledged label is there";
  }
  // The rater tool resends what it was not sure about: same client ids, same ids back, nothing doubled.
  LabelClient c("127.0.0.1", second.port, token);
  for (int i = 20; i < 25; ++i) EXPECT_EQ(c.submit(sent[i]), acks[i]);
  EXPECT_EQ(c.stats().labels, 25u);
  EXPECT_EQ(second.end(SIGTERM), 0);
}

namespace {
// A self-signed certificate for 127.0.0.1 and localhost (openssl from Debian).
void make_certificate(const std::string& dir, const std::string& name) {
  const std::string cmd = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj "
                          "/CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout " +
                          dir + "/" + name + ".key -out " + dir + "/" + name + ".pem 2>/dev/null";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
}
}  // namespace

// The service spoke only plaintext, so tokens and labels crossed the network
// in clear (issue "Hardening"). With --tls_cert/--tls_key it speaks TLS, the
// rater checks the certificate, and beyond loopback TLS is required unless
// plaintext is allowed explicitly.
TEST(LabelService, TlsCarriesTheSameProtocolAndIsRequiredBeyondLoopback) {
  test::TempDir dir("svc-tls");
  const std::string db = dir.file("l.sqlite");
  const std::string token = test::store_with_rater(db, 3);
  make_certificate(dir.path(), "server");
  make_certificate(dir.path(), "other");
  ServiceConfig c;
  c.tls_cert = dir.file("server.pem");
  c.tls_key = dir.file("server.key");
  {
    ServerThread server(db, {}, c);
    LabelClient client("127.0.0.1", server.port, token, 30, dir.file("server.pem"));
    EXPECT_EQ(client.rater(), "ann");
    const auto t = client.next_task();
    ASSERT_TRUE(t);
    EXPECT_GT(client.submit(left_better_of(*t, "tls-1")), 0);
    EXPECT_EQ(client.stats().labels, 1u);
    // A certificate from another authority is refused, and so is a client that does not speak TLS.
    EXPECT_NE(test::error_of([&] { LabelClient("127.0.0.1", server.port, token, 5, dir.file("other.pem")); })
                  .find("--tls_ca"),
              std::string::npos);
    EXPECT_NE(test::error_of([&] { LabelClient("127.0.0.1", server.port, token, 5); }).find("connection lost"),
              std::string::npos);
  }
  ServiceConfig mismatched = c;
  mismatched.tls_key = dir.file("other.key");
  EXPECT_NE(test::error_of([&] { ServerThread server(db, {}, mismatched); }).find("--tls_key"),
            std::string::npos);
  ServiceConfig open;
  open.host = "0.0.0.0";
  EXPECT_NE(test::error_of([&] { ServerThread server(db, {}, open); }).find("--tls_cert"), std::string::npos);
  open.allow_plaintext = true;
  ServerThread plain(db, {}, open);
  EXPECT_EQ(LabelClient("127.0.0.1", plain.port, token).stats().labels, 1u);
}

namespace {
// User plus system CPU seconds a process has used (/proc/PID/stat).
double cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;  // state .. cmajflt
  double utime = 0, stime = 0;
  fields >> utime >> stime;
  return (utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}
}  // namespace

// Out of file descriptors, the accept loop spun (4 s of CPU in 5 s) and
// honest clients timed out (issue "Hardening"). Now it backs off, logs once,
// and serves again when connections close.
TEST(LabelService, OutOfFileDescriptorsTheServerBacksOffAndRecovers) {
  test::TempDir dir("svc-fds");
  const std::string db = dir.file("l.sqlite");
  const std::string token = test::store_with_rater(db, 3);
  ServeLabelsProcess server(db, dir.file("server.log"), "ulimit -n 40");
  ASSERT_GT(server.port, 0) << server.output();
  {
    std::vector<std::unique_ptr<RawSocket>> flood;
    for (int i = 0; i < 60; ++i) flood.push_back(std::make_unique<RawSocket>(server.port));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    const double before = cpu_seconds(server.pid);
    std::this_thread::sleep_for(std::chrono::seconds(2));
    EXPECT_LT(cpu_seconds(server.pid) - before, 0.5) << "the accept loop must not spin while out of descriptors";
  }  // the flood closes
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(LabelClient("127.0.0.1", server.port, token).stats().labels, 0u)
      << "serves again once descriptors are free";
  const std::string text = server.stop();
  EXPECT_NE(text.find("cannot accept a connection"), std::string::npos) << text;
  EXPECT_NE(text.find("accepting connections again"), std::string::npos) << text;
}

// A lock held by another process froze every rater, and every request was
// served on the one I/O thread (issue "Hardening"). Store work runs on its
// own thread with a short busy timeout: while a request waits for the lock,
// the I/O thread still refuses a hostile frame, and the waiting rater is told
// to try again instead of waiting 10 s.
TEST(LabelService, ALockedStoreAnswersBusyAndNeverStallsTheIoThread) {
  test::TempDir dir("svc-busy");
  const std::string db = dir.file("l.sqlite");
  const std::string token = test::store_with_rater(db, 5);
  ServiceConfig c;
  c.store_busy_timeout_ms = 3000;
  ServerThread server(db, {}, c);
  LabelClient client("127.0.0.1", server.port, token);
  const auto t = client.next_task();
  ASSERT_TRUE(t);
  sql::Db other(db);
  other.exec("BEGIN IMMEDIATE");
  std::atomic<bool> submit_returned{false};
  std::string busy;
  std::thread waiter([&] {
    busy = test::error_of([&] { client.submit(left_better_of(*t, "x")); });
    submit_returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RawSocket raw(server.port);
  raw.send(frame_header(1 << 20));
  const std::string refused = raw.read_until_closed();
  EXPECT_NE(error_in(refused).find("before hello"), std::string::npos);
  EXPECT_FALSE(submit_returned) << "the hostile frame was answered while the store thread waited for the lock";
  waiter.join();
  EXPECT_NE(busy.find("try again"), std::string::npos) << busy;
  other.exec("ROLLBACK");
  EXPECT_GT(client.submit(left_better_of(*t, "x")), 0) << "the connection goes on once the lock is gone";
}

// `serve-labels --db typo.sqlite` served a new empty store; --port 70000
// bound port 4464 (issue "Hardening").
TEST(LabelService, ServingNeedsAnExistingStoreAndAPortInRange) {
  test::TempDir dir("serveargs");
  const std::string typo = dir.file("typo.sqlite");
  EXPECT_NE(test::run_cli({"serve-labels", "--db", typo, "--port", "0"}, dir.file("a.log")), 0);
  EXPECT_NE(read_file(dir.file("a.log")).find("--create"), std::string::npos) << read_file(dir.file("a.log"));
  EXPECT_FALSE(path_exists(typo)) << "nothing is created";
  test::store_with_rater(dir.file("l.sqlite"), 1);
  EXPECT_NE(test::run_cli({"serve-labels", "--db", dir.file("l.sqlite"), "--port", "70000"}, dir.file("b.log")), 0);
  EXPECT_NE(read_file(dir.file("b.log")).find("70000"), std::string::npos) << read_file(dir.file("b.log"));
  EXPECT_NE(test::run_cli({"serve-labels", "--db", dir.file("l.sqlite"), "--max_frame_bytes", "99999999999"},
                          dir.file("c.log")),
            0);
}

TEST(LabelService, HostPortIsParsedWithClearErrors) {
  EXPECT_EQ(parse_host_port("127.0.0.1:7461"), std::make_pair(std::string("127.0.0.1"), 7461));
  EXPECT_NE(test::error_of([] { parse_host_port("localhost"); }).find("HOST:PORT"), std::string::npos);
  EXPECT_NE(test::error_of([] { parse_host_port("h:99999"); }).find("1..65535"), std::string::npos);
}

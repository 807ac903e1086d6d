// Direct preference optimisation: each loss type against hand-computed
// values, a run that learns the labelled preference, reference log-probs
// cached at the start equal to a fresh reference's, and an exact resume.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "common/fs.h"
#include "dpo/dpo.h"
#include "dpo/dpo_loss.h"
#include "policy/checkpoint.h"
#include "process_util.h"
#include "test_util.h"
#include "tiny_fixtures.h"
#include "train/safetensors.h"

namespace rlhf {
namespace {

torch::Tensor t1(std::vector<float> v) { return torch::tensor(v); }

// Three pairs with beta 0.5: h = 2 (b h = 1), h = -1 (b h = -0.5), and a tie with h = 2.
DpoTerms three_pairs(DpoLossType type, double smoothing) {
  return dpo_loss(t1({-10, -12, -10}), t1({-12, -11, -12}), t1({-11, -11, -11}), t1({-11, -11, -11}),
                  torch::tensor({false, false, true}), 0.5, type, smoothing);
}

void expect_losses(const DpoTerms& t, std::vector<double> want, const char* what) {
  ASSERT_EQ(t.losses.numel(), static_cast<int64_t>(want.size()));
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(t.losses[static_cast<int64_t>(i)].item<double>(), want[i], 1e-5) << what << " pair " << i;
  }
}

TEST(DpoLoss, EachLossTypeMatchesHandComputedValues) {
  // -log s(1) = 0.3132617, -log s(-1) = 1.3132617, -log s(-0.5) = 0.9740770, -log s(0.5) = 0.4740770.
  expect_losses(three_pairs(DpoLossType::kSigmoid, 0), {0.3132617, 0.9740770, (0.3132617 + 1.3132617) / 2}, "sigmoid");
  expect_losses(three_pairs(DpoLossType::kSigmoid, 0.1),
                {0.9 * 0.3132617 + 0.1 * 1.3132617, 0.9 * 0.9740770 + 0.1 * 0.4740770, (0.3132617 + 1.3132617) / 2},
                "cDPO");
  expect_losses(three_pairs(DpoLossType::kRobust, 0.1),
                {(0.9 * 0.3132617 - 0.1 * 1.3132617) / 0.8, (0.9 * 0.9740770 - 0.1 * 0.4740770) / 0.8,
                 (0.3132617 + 1.3132617) / 2},
                "robust");
  // IPO: (h - 1 / (2 b))^2 with 1 / (2 b) = 1; a tie: h^2.
  expect_losses(three_pairs(DpoLossType::kIpo, 0), {1.0, 4.0, 4.0}, "ipo");
  // Hinge: relu(1 - b h); a tie: |b h|.
  expect_losses(three_pairs(DpoLossType::kHinge, 0), {0.0, 1.5, 1.0}, "hinge");
  const DpoTerms t = three_pairs(DpoLossType::kSigmoid, 0);
  EXPECT_NEAR(t.chosen_rewards[0].item<double>(), 0.5, 1e-6);
  EXPECT_NEAR(t.rejected_rewards[0].item<double>(), -0.5, 1e-6);
  EXPECT_NE(test::error_of([] { parse_dpo_loss_type("kto"); }).find("sigmoid"), std::string::npos);
  // RPO's term: -(sum of log-probs) / tokens per chosen reply, 0 for a tie.
  const torch::Tensor nll = chosen_nll(torch::tensor({-6.0f, -1.0f, -4.0f}), torch::tensor({3.0f, 4.0f, 2.0f}),
                                       torch::tensor({false, false, true}));
  EXPECT_NEAR(nll[0].item<double>(), 2.0, 1e-6);
  EXPECT_NEAR(nll[1].item<double>(), 0.25, 1e-6);
  EXPECT_EQ(nll[2].item<double>(), 0.0);
}

PreferencePair labelled(const Conversation& prompt, const std::string& chosen, const std::string& rejected,
                        bool tie = false) {
  PreferencePair p;
  p.prompt = prompt;
  p.chosen = chosen;
  p.rejected = rejected;
  p.tie = tie;
  return p;
}

TEST(DpoPairs, BestVsWorstPoolsEachPromptsLabelsIntoOnePairByWinRate) {
  const Conversation q1{{"user", "where is order 1?"}}, q2{{"user", "where is order 2?"}};
  // q1: a > b > c > d by gold, all six pairs labelled, one label flipped
  // (c over b) and one tie (a, d): win rates a 2.5/3, c 2/3, b 1/3, d 0.5/3.
  std::vector<PreferencePair> pairs = {labelled(q1, "a", "b"), labelled(q1, "a", "c"), labelled(q1, "a", "d", true),
                                       labelled(q1, "c", "b"), labelled(q1, "b", "d"), labelled(q1, "c", "d")};
  // q2: two replies labelled once each way: equal rates, no clear preference.
  pairs.push_back(labelled(q2, "x", "y"));
  pairs.push_back(labelled(q2, "y", "x"));
  const std::vector<PreferencePair> worst = select_pairs(pairs, PairSelection::kBestVsWorst);
  ASSERT_EQ(worst.size(), 1u);  // q2 gives none
  EXPECT_EQ(worst[0].chosen, "a");
  EXPECT_EQ(worst[0].rejected, "d");
  EXPECT_FALSE(worst[0].tie);
  EXPECT_EQ(worst[0].weight, 1.0);
  EXPECT_EQ(worst[0].prompt.size(), 1u);

  const std::vector<PreferencePair> rest = select_pairs(pairs, PairSelection::kBestVsRest);
  ASSERT_EQ(rest.size(), 3u);
  for (const PreferencePair& p : rest) {
    EXPECT_EQ(p.chosen, "a");
    EXPECT_NEAR(p.weight, 1.0 / 3, 1e-12);
  }
  EXPECT_EQ(select_pairs(pairs, PairSelection::kAll).size(), pairs.size());
  // A reply cut off at the length limit is another reply than the same text finished.
  std::vector<PreferencePair> cut = {labelled(q1, "a", "a")};
  cut[0].rejected_finished = false;
  const std::vector<PreferencePair> one = select_pairs(cut, PairSelection::kBestVsWorst);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_TRUE(one[0].chosen_finished);
  EXPECT_FALSE(one[0].rejected_finished);
  EXPECT_NE(test::error_of([] { parse_pair_selection("top"); }).find("data.pairs"), std::string::npos);
}

// Pairs where the labelled reply names the order and the other does not.
std::vector<PreferencePair> order_pairs(int n, int first) {
  std::vector<PreferencePair> out;
  for (int i = 0; i < n; ++i) {
    PreferencePair p;
    const std::string order = std::to_string(10000 + first + i);
    p.prompt = {{"user", "Where is order #" + order + "?"}};
    p.chosen = "Order " + order + " has shipped and arrives Monday.";
    p.rejected = "I do not know.";
    p.group = i;
    out.push_back(p);
  }
  return out;
}

struct DpoFixture {
  test::TempDir dir{"dpo"};
  std::vector<PreferencePair> train = order_pairs(32, 0), eval = order_pairs(8, 100);
  DpoFixture() { test::write_tiny_ppo_inputs(dir.path()); }
  DpoConfig config(const std::string& out) const {
    DpoConfig c;
    c.out_dir = dir.file(out);
    c.policy = dir.file("policy");
    c.train.batch_size = 8;
    c.train.max_steps = 12;
    c.train.eval_interval = 6;
    c.train.threads = 1;  // tiny model: see tiny_online_config in test_ppo.cpp
    c.schedule.lr = 3e-3;
    c.schedule.min_lr = 3e-4;
    c.schedule.warmup_steps = 2;
    c.dpo.beta = 0.1;
    return c;
  }
};

TEST(Dpo, LearnsTheLabelledPreferenceAndCachesTheReference) {
  DpoFixture f;
  const DpoConfig c = f.config("run");
  const DpoResult r = run_dpo(c, f.train, f.eval, 0);
  EXPECT_GT(r.eval.accuracy, 0.9) << "held-out accuracy";
  EXPECT_GT(r.eval.margin, 0.0);
  EXPECT_LT(r.eval.loss, std::log(2.0)) << "below the loss of no preference";

  // The cached reference log-probs are a fresh reference's.
  const TensorMap cache = load_safetensors(c.out_dir + "/reference_logps.safetensors").tensors;
  LoadedPolicy ref = load_policy(c.policy);
  prepare_chat_tokenizer(ref.tokenizer);
  const ChatTemplate chat(ref.tokenizer);
  std::vector<const Conversation*> prompts;
  std::vector<const std::string*> replies;
  for (const auto& p : f.eval) {
    prompts.push_back(&p.prompt);
    replies.push_back(&p.rejected);
  }
  torch::NoGradGuard no_grad;
  const torch::Tensor fresh = reply_logprobs(ref.model, chat, prompts, replies,
                                             std::vector<bool>(prompts.size(), true), false, torch::kCPU);
  EXPECT_TRUE(torch::allclose(cache.at("eval")[1], fresh, 1e-5, 1e-4)) << cache.at("eval")[1] << fresh;
  // The policy moved away from it: its checkpoint is an HF folder like the SFT one.
  EXPECT_TRUE(path_exists(join_path(r.checkpoint, "config.json")));
  EXPECT_TRUE(path_exists(join_path(r.checkpoint, "tokenizer.json")));
}

TEST(Dpo, ResumeFromACheckpointEqualsTheUninterruptedRun) {
  DpoFixture f;
  const DpoConfig straight = f.config("straight");
  run_dpo(straight, f.train, f.eval, 0);
  const DpoConfig killed = f.config("killed");
  run_dpo(killed, f.train, f.eval, 0);
  remove_all(killed.out_dir + "/checkpoints/step-0000012");
  mark_checkpoint(killed.out_dir, "step-0000006");
  run_dpo(killed, f.train, f.eval, 0);
  EXPECT_EQ(read_file(resolve_checkpoint(killed.out_dir) + "/model.safetensors"),
            read_file(resolve_checkpoint(straight.out_dir) + "/model.safetensors"));
  EXPECT_EQ(test::file_lines(killed.out_dir + "/metrics.jsonl"), test::file_lines(straight.out_dir + "/metrics.jsonl"));
}

TEST(Dpo, TheShippedConfigLoadsAndAnUnknownLossTypeFailsBeforeAnyModelLoads) {
  const DpoConfig c = load_config<DpoConfig>(test::source_dir() + "/configs/dpo.toml", {});
  EXPECT_EQ(c.dpo.loss_type, "sigmoid");
  test::TempDir dir("dpo-cli");
  const int rc = test::run_cli({"dpo", "--config", test::source_dir() + "/configs/dpo.toml", "--dpo.loss_type=kto",
                                "--policy=" + dir.file("nothing"), "--out_dir=" + dir.file("out")},
                               dir.file("log"));
  EXPECT_NE(rc, 0);
  EXPECT_NE(read_file(dir.file("log")).find("dpo.loss_type 'kto' is not one of sigmoid"), std::string::npos)
      << read_file(dir.file("log"));
}

}  // namespace
}  // namespace rlhf

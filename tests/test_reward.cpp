// The reward model: Bradley-Terry loss and gradient against hand-computed
// values, the score read at the last real token under left and right
// padding, and a short training run that learns a preference.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "reward/reward_model.h"
#include "train/safetensors.h"
#include "reward/rm_train.h"
#include "test_util.h"
#include "tiny_preferences.h"
#include "tiny_fixtures.h"

namespace rlhf {
namespace {

PreferencePair pair(const Conversation& prompt, const std::string& chosen, const std::string& rejected) {
  PreferencePair p;
  p.prompt = prompt;
  p.chosen = chosen;
  p.rejected = rejected;
  return p;
}

TEST(BradleyTerry, LossAndGradientMatchAHandComputedCase) {
  // Pairs: (2, 1, margin 0), (2, 1, margin 0.5), tie (2, 1); weights 1, 1, 2.
  torch::Tensor rc = torch::tensor({2.0, 2.0, 2.0}, torch::kDouble).requires_grad_();
  torch::Tensor rr = torch::tensor({1.0, 1.0, 1.0}, torch::kDouble).requires_grad_();
  torch::Tensor margin = torch::tensor({0.0, 0.5, 0.0}, torch::kDouble);
  torch::Tensor tie = torch::tensor({0.0, 0.0, 1.0}, torch::kDouble);
  torch::Tensor w = torch::tensor({1.0, 1.0, 2.0}, torch::kDouble);
  torch::Tensor per = bradley_terry_per_pair(rc, rr, margin, tie);
  // -log sigmoid(1) = log(1 + e^-1); -log sigmoid(0.5); tie: (log(1+e^-1) + log(1+e)) / 2.
  EXPECT_NEAR(per[0].item<double>(), 0.31326168751822286, 1e-12);
  EXPECT_NEAR(per[1].item<double>(), 0.47407698418010663, 1e-12);
  EXPECT_NEAR(per[2].item<double>(), 0.81326168751822286, 1e-12);
  torch::Tensor loss = bradley_terry_loss(rc, rr, margin, tie, w);
  EXPECT_NEAR(loss.item<double>(), (0.31326168751822286 + 0.47407698418010663 + 2 * 0.81326168751822286) / 4, 1e-12);
  loss.backward();
  // d/d r_chosen: -(1 - sigmoid(d - m)) * w / sum(w); tie: (sigmoid(d) - sigmoid(-d)) / 2 * w / sum(w).
  const double s1 = 1 / (1 + std::exp(-1.0)), s05 = 1 / (1 + std::exp(-0.5));
  EXPECT_NEAR(rc.grad()[0].item<double>(), -(1 - s1) / 4, 1e-12);
  EXPECT_NEAR(rc.grad()[1].item<double>(), -(1 - s05) / 4, 1e-12);
  EXPECT_NEAR(rc.grad()[2].item<double>(), (s1 - (1 - s1)) / 2 * 2 / 4, 1e-12);
  EXPECT_TRUE(torch::allclose(rr.grad(), -rc.grad()));
}

TEST(BradleyTerry, LabelNoiseBoundsThePullOfAConfidentlyContradictedPair) {
  // d = 1 with e = 0.1: -log(0.9 sigmoid(1) + 0.1 sigmoid(-1)); the gradient
  // d/dd = -(0.9 - 0.1) s(1) s(-1) / (0.9 s(1) + 0.1 s(-1)).
  const double s1 = 1 / (1 + std::exp(-1.0)), p = 0.9 * s1 + 0.1 * (1 - s1);
  torch::Tensor rc = torch::tensor({2.0, -8.0}, torch::kDouble).requires_grad_();
  torch::Tensor rr = torch::tensor({1.0, 2.0}, torch::kDouble);
  const torch::Tensor none = torch::zeros({2}, torch::kDouble);
  torch::Tensor per = bradley_terry_per_pair(rc, rr, none, none, 0.1);
  EXPECT_NEAR(per[0].item<double>(), -std::log(p), 1e-12);
  per.sum().backward();
  EXPECT_NEAR(rc.grad()[0].item<double>(), -0.8 * s1 * (1 - s1) / p, 1e-12);
  // A pair the model contradicts by 10: plain Bradley-Terry pulls with ~1,
  // the noise-aware loss with almost nothing (it may be a flipped label).
  EXPECT_LT(std::abs(rc.grad()[1].item<double>()), 0.01);
  torch::Tensor plain_rc = torch::tensor({-8.0}, torch::kDouble).requires_grad_();
  bradley_terry_per_pair(plain_rc, torch::tensor({2.0}, torch::kDouble), none.narrow(0, 0, 1), none.narrow(0, 0, 1))
      .sum()
      .backward();
  EXPECT_NEAR(plain_rc.grad()[0].item<double>(), -1.0, 1e-4);
  // e = 0 is plain Bradley-Terry.
  EXPECT_NEAR(bradley_terry_per_pair(rc, rr, none, none, 0.0)[0].item<double>(), std::log1p(std::exp(-1.0)), 1e-12);
}

TEST(RewardModel, ScoreIsReadAtTheLastRealTokenWhateverThePadding) {
  torch::manual_seed(0);
  GPTConfig c = test::tiny_gpt_config(300, 64);
  ScalarHeadModel rm(c);
  init_gpt_weights(*rm->transformer, c, 3);
  rm->eval();
  torch::NoGradGuard ng;
  torch::Tensor seq = torch::randint(300, {1, 12});
  const double alone = rm->forward(seq, torch::ones({1, 12}, torch::kLong)).item<double>();
  torch::Tensor pad = torch::full({1, 6}, 7, torch::kLong);
  torch::Tensor zeros = torch::zeros({1, 6}, torch::kLong), ones = torch::ones({1, 12}, torch::kLong);
  const double right = rm->forward(torch::cat({seq, pad}, 1), torch::cat({ones, zeros}, 1)).item<double>();
  const double left = rm->forward(torch::cat({pad, seq}, 1), torch::cat({zeros, ones}, 1)).item<double>();
  EXPECT_NEAR(right, alone, 1e-5);
  EXPECT_NEAR(left, alone, 1e-5);
  // The last position of a right-padded row is padding and scores differently (trl#937).
  const double wrong = rm->forward_tokens(torch::cat({seq, pad}, 1), torch::cat({ones, zeros}, 1))[0][17].item<double>();
  EXPECT_GT(std::abs(wrong - alone), 1e-4);
  torch::Tensor masks = torch::tensor({1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1}).view({3, 4});
  EXPECT_TRUE(torch::equal(last_token_index(masks), torch::tensor({1, 3, 3}, torch::kLong)));
}

TEST(RewardModel, HeadStartsNearTheDocumentedScaleAndTrainingLearnsAPreference) {
  test::TempDir dir("rm-train");
  auto data = test::tiny_support_data(32, 8, 4);
  Tokenizer tok = test::tiny_support_tokenizer(data);
  test::write_tiny_checkpoint(dir.file("sft"), tok);
  // The preference: polite replies beat curt ones.
  const std::vector<PreferencePair> pairs =
      test::polite_over_curt_pairs(64, "Hi, thanks for reaching out. It shipped today. Have a great day!",
                                   "Read the policy next time.");
  RewardTrainConfig cfg;
  cfg.out_dir = dir.file("rm");
  cfg.init_from = dir.file("sft");
  cfg.train.batch_size = 8;
  cfg.train.epochs = 3;
  cfg.train.threads = 1;  // tiny model: see tiny_online_config in test_ppo.cpp
  cfg.schedule.lr = 3e-3;
  cfg.schedule.warmup_steps = 2;
  const RewardTrainResult r = run_reward_training(cfg, pairs, {pairs.begin(), pairs.begin() + 8}, 0);
  EXPECT_GT(r.eval.label_accuracy, 0.99);
  LoadedRewardModel m = load_reward_model(r.checkpoint);
  const ChatTemplate chat(m.tokenizer);
  // Normalised on the training replies: mean 0, sd 1 over the two replies.
  std::vector<const Conversation*> prompts = {&pairs[0].prompt, &pairs[0].prompt};
  std::vector<const std::string*> replies = {&pairs[0].chosen, &pairs[0].rejected};
  const auto raw = score_replies(m.model, chat, prompts, replies, 2, torch::kCPU);
  const double a = m.model->gain * raw[0] + m.model->bias, b = m.model->gain * raw[1] + m.model->bias;
  EXPECT_NEAR(a + b, 0.0, 0.05);
  EXPECT_NEAR(a - b, 2.0, 0.05);
  const Json config = read_json_file(r.checkpoint + "/config.json");
  EXPECT_EQ(config["architectures"][0], "GPT2ForSequenceClassification");
  EXPECT_EQ(config["num_labels"], 1);
}

TEST(RewardModel, PairsOfOnePromptShareOneForwardPassWithTheSameLossAsPairByPair) {
  torch::manual_seed(0);
  auto data = test::tiny_support_data(16, 4, 2);
  Tokenizer tok = test::tiny_support_tokenizer(data);
  tok.add_special_tokens(special::defaults());
  GPTConfig c = test::tiny_gpt_config(tok.vocab_size(), 64);
  ScalarHeadModel rm(c);
  init_gpt_weights(*rm->transformer, c, 3);
  const ChatTemplate chat(tok);
  // A K = 3 ranking of one prompt as its three pairs, then another prompt's pair.
  const Conversation q1 = {{"user", "Where is order 12345?"}}, q2 = {{"user", "Can I return it?"}};
  std::vector<PreferencePair> pairs = {pair(q1, "It shipped today.", "No idea."),
                                       pair(q1, "It shipped today.", "Read the policy."),
                                       pair(q1, "No idea.", "Read the policy."), pair(q2, "Yes, within 30 days.", "No.")};
  pairs[2].tie = true;
  pairs[3].margin = 0.5;
  const auto groups = group_by_prompt(pairs);
  ASSERT_EQ(groups, (std::vector<std::vector<size_t>>{{0, 1, 2}, {3}}));
  const PairBatch b = pair_batch(pairs, {&groups[0], &groups[1]});
  EXPECT_EQ(b.replies.size(), 5u) << "three distinct replies for the first prompt, two for the second";
  EXPECT_EQ(b.chosen, (std::vector<int64_t>{0, 0, 1, 3}));
  EXPECT_EQ(b.rejected, (std::vector<int64_t>{1, 2, 2, 4}));
  const torch::Tensor grouped = pair_batch_losses(b, pair_batch_rewards(rm, chat, b, torch::kCPU));
  for (size_t i = 0; i < pairs.size(); ++i) {
    const std::vector<size_t> one = {i};
    const PairBatch alone_batch = pair_batch(pairs, {&one});
    const torch::Tensor alone = pair_batch_losses(alone_batch, pair_batch_rewards(rm, chat, alone_batch, torch::kCPU));
    EXPECT_NEAR(grouped[static_cast<int64_t>(i)].item<double>(), alone[0].item<double>(), 1e-5) << "pair " << i;
  }
}

// Scoring each prompt once for all its replies must not change what is
// learned: the same rewards and the same gradients as whole sequences, for
// both architectures, with prompts and replies of different lengths and a
// reply cut off at the limit (no end-of-turn token).
TEST(RewardModel, SharedPromptsGiveTheRewardsAndGradientsOfWholeSequences) {
  auto data = test::tiny_support_data(16, 4, 2);
  Tokenizer tok = test::tiny_support_tokenizer(data);
  tok.add_special_tokens(special::defaults());
  const ChatTemplate chat(tok);
  const Conversation q1 = {{"system", "Be polite."}, {"user", "Where is order 12345? It has been a week."}};
  const Conversation q2 = {{"user", "Can I return it?"}};
  std::vector<PreferencePair> pairs = {
      pair(q1, "It shipped today and should arrive on Friday.", "No idea."),
      pair(q1, "No idea.", "Read the policy."),
      pair(q2, "Yes, within 30 days, free of charge.", "No."),
      pair(q2, "No.", "Ask someone else, I am busy with other orders today")};
  pairs[3].rejected_finished = false;
  const auto groups = group_by_prompt(pairs);
  std::vector<const std::vector<size_t>*> all;
  for (const auto& g : groups) all.push_back(&g);
  const PairBatch b = pair_batch(pairs, all);

  const std::optional<SharedPromptBatch> shared = shared_prompt_batch(chat, b.prompts, b.replies, 64, b.finished);
  ASSERT_TRUE(shared.has_value());
  EXPECT_EQ(shared->prompt_ids.size(0), 2) << "each prompt once";
  EXPECT_EQ(shared->reply_ids.size(0), static_cast<int64_t>(b.replies.size()));
  EXPECT_FALSE(shared_prompt_batch(chat, b.prompts, b.replies, 12, b.finished).has_value())
      << "rows longer than the context are scored whole (their start is cut)";

  for (const std::string arch : {"gpt2", "llama"}) {
    GPTConfig c = test::tiny_gpt_config(tok.vocab_size(), 64);
    c.arch = arch;
    if (arch == "llama") c.n_kv_head = 1;  // grouped-query attention too
    torch::manual_seed(1);
    ScalarHeadModel whole(c), split(c);
    init_gpt_weights(*whole->transformer, c, 3);
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < whole->parameters().size(); ++i) split->parameters()[i].copy_(whole->parameters()[i]);
    {
      torch::AutoGradMode grad(true);
      const torch::Tensor r_whole = pair_batch_rewards(whole, chat, b, torch::kCPU, /*share_prompts=*/false);
      const torch::Tensor r_split = pair_batch_rewards(split, chat, b, torch::kCPU, /*share_prompts=*/true);
      ASSERT_TRUE(torch::allclose(r_whole, r_split, 1e-4, 1e-5)) << arch << ": " << r_whole << " vs " << r_split;
      pair_batch_losses(b, r_whole, 0.1).sum().backward();
      pair_batch_losses(b, r_split, 0.1).sum().backward();
    }
    const auto gw = whole->named_parameters(), gs = split->named_parameters();
    for (const auto& item : gw) {
      const torch::Tensor& a = item.value().grad();
      const torch::Tensor& s = gs[item.key()].grad();
      ASSERT_TRUE(a.defined() && s.defined()) << arch << " " << item.key();
      EXPECT_TRUE(torch::allclose(a, s, 1e-3, 1e-5)) << arch << " " << item.key() << " max diff "
                                                     << (a - s).abs().max().item<double>();
    }
  }
}

TEST(RewardModel, EvaluationWithSharedPromptsGivesTheSameRewardsAndAccuracy) {
  auto data = test::tiny_support_data(16, 4, 2);
  Tokenizer tok = test::tiny_support_tokenizer(data);
  tok.add_special_tokens(special::defaults());
  const ChatTemplate chat(tok);
  GPTConfig c = test::tiny_gpt_config(tok.vocab_size(), 128);
  ScalarHeadModel rm(c);
  init_gpt_weights(*rm->transformer, c, 5);
  // A ranking's pairs: each reply in several of them. Six replies per
  // pass: the second prompt's replies are split over two passes.
  std::vector<PreferencePair> pairs;
  const std::vector<std::string> replies = {"It shipped today.", "No idea.", "Read the policy.",
                                            "Thanks, it is on its way."};
  for (const Conversation& q : {Conversation{{"user", "Where is order 12345?"}}, Conversation{{"user", "Refund?"}}}) {
    for (size_t i = 0; i < replies.size(); ++i) {
      for (size_t j = i + 1; j < replies.size(); ++j) {
        pairs.push_back(pair(q, replies[i], replies[j]));
      }
    }
  }
  std::vector<Json> plain_records, shared_records;
  const RewardEval plain = evaluate_reward_model(rm, chat, pairs, 6, torch::kCPU, &plain_records, false);
  const RewardEval shared = evaluate_reward_model(rm, chat, pairs, 6, torch::kCPU, &shared_records, true);
  EXPECT_EQ(plain.pairs, shared.pairs);
  EXPECT_DOUBLE_EQ(plain.label_accuracy, shared.label_accuracy);
  EXPECT_NEAR(plain.mean_margin, shared.mean_margin, 1e-5);
  ASSERT_EQ(plain_records.size(), shared_records.size());
  for (size_t i = 0; i < plain_records.size(); ++i) {
    for (const char* key : {"reward_chosen", "reward_rejected"}) {
      EXPECT_NEAR(plain_records[i][key].get<double>(), shared_records[i][key].get<double>(), 1e-5) << key << " " << i;
    }
  }
}

TEST(RewardModel, FrozenBackboneParametersStayAsInTheStartingModel) {
  test::TempDir dir("rm-freeze");
  auto data = test::tiny_support_data(32, 8, 4);
  Tokenizer tok = test::tiny_support_tokenizer(data);
  test::write_tiny_checkpoint(dir.file("sft"), tok);
  const std::vector<PreferencePair> pairs =
      test::polite_over_curt_pairs(16, "Hi, it shipped today. Have a great day!", "No.");
  RewardTrainConfig cfg;
  cfg.out_dir = dir.file("rm");
  cfg.init_from = dir.file("sft");
  cfg.train.batch_size = 8;
  cfg.train.threads = 1;
  cfg.freeze.embeddings = true;
  cfg.freeze.first_layers = 1;
  const RewardTrainResult r = run_reward_training(cfg, pairs, {pairs.begin(), pairs.begin() + 4}, 0);
  const auto before = load_safetensors(resolve_checkpoint(dir.file("sft")) + "/model.safetensors").tensors;
  const auto after = load_safetensors(r.checkpoint + "/model.safetensors").tensors;
  size_t frozen = 0, changed = 0;
  for (const auto& [name, t] : after) {
    if (!before.count(name)) continue;  // the score head is new
    const bool same = torch::equal(t, before.at(name));
    if (name.find(".wte.") != std::string::npos || name.find(".wpe.") != std::string::npos ||
        name.rfind("transformer.h.0.", 0) == 0) {
      EXPECT_TRUE(same) << name << " was frozen";
      ++frozen;
    } else {
      changed += !same;
    }
  }
  EXPECT_GT(frozen, 2u);
  EXPECT_GT(changed, 0u) << "the other blocks still train";
}

TEST(RewardModel, NewHeadIsDrawnWithStdOneOverSqrtDPlusOne) {
  test::TempDir dir("rm-head");
  auto data = test::tiny_support_data(16, 4, 2);
  Tokenizer tok = test::tiny_support_tokenizer(data);
  GPTConfig c = test::tiny_gpt_config(tok.vocab_size());
  c.n_embd = 256;
  c.n_head = 4;
  GPT m(c);
  init_gpt_weights(*m, c, 1);
  CheckpointWrite w;
  w.weights = model_weights(*m);
  w.hf_config = gpt_config_to_hf(c);
  w.tokenizer = &tok;
  save_checkpoint(dir.file("p"), w);
  ScalarHeadModel rm = reward_model_from_policy(load_policy(dir.file("p")), 7);
  const double sd = rm->score->weight.std().item<double>();
  EXPECT_NEAR(sd, 1.0 / std::sqrt(257.0), 0.2 / std::sqrt(257.0));
  // The backbone is the policy's.
  EXPECT_TRUE(torch::equal(rm->transformer->wte->weight, m->transformer->wte->weight));
}

}  // namespace
}  // namespace rlhf

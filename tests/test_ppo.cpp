// PPO's pieces against hand-computed cases (GAE, clipped losses, KL
// estimators, the adaptive controller, whitening, the missing-EOS penalty),
// a few iterations on a tiny model raising a toy reward, and resume.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <functional>
#include <sstream>

#include "common/fs.h"
#include "policy/checkpoint.h"
#include "labels/store.h"
#include "policy/generate.h"
#include "rollout/grpo.h"
#include "rollout/live_feedback.h"
#include "rollout/pipeline.h"
#include "rollout/ppo.h"
#include "rollout/ppo_math.h"
#include "test_util.h"
#include "tiny_fixtures.h"

namespace rlhf {
namespace {

torch::Tensor t2(std::vector<float> v, int64_t rows) {
  return torch::tensor(v).view({rows, static_cast<int64_t>(v.size()) / rows});
}

TEST(Configs, EveryShippedConfigLoadsWithoutUnknownKeys) {
  const std::string dir = std::string(RLHF_SOURCE_DIR) + "/configs/";
  load_config<PretrainConfig>(dir + "pretrain.toml", {});
  load_config<SftConfig>(dir + "sft.toml", {});
  load_config<RewardTrainConfig>(dir + "rm.toml", {});
  load_config<PpoConfig>(dir + "ppo.toml", {});
  const auto grpo = load_config<GrpoConfig>(dir + "grpo.toml", {});
  validate_grpo_config(grpo, 1);
  const auto rloo = load_config<GrpoConfig>(dir + "grpo.toml", {"--out_dir=runs/rloo"}, rloo_defaults());
  EXPECT_EQ(rloo.train.advantage, "rloo") << "rlhf rloo keeps its defaults under a GRPO config";
  const auto demo = load_config<PipelineConfig>(dir + "demo.toml", {});
  EXPECT_EQ(demo.rm.train.label_noise, 0.1);
  EXPECT_EQ(demo.rloo.kl.mode, "reward");
  validate_grpo_config(demo.grpo, 1);
  validate_grpo_config(demo.rloo, 1);
  load_config<PipelineConfig>(dir + "ci.toml", {});
  const auto active = load_config<labels::ActiveLoopConfig>(dir + "active.toml", {});
  labels::validate_active_config(active);
  EXPECT_EQ(active.budgets, (std::vector<int64_t>{1000, 2000, 4000, 8000, 16000}));
}

// `rm train` with batch_size 0 trained on nothing and exited 0; `ppo` with
// negative iterations rewrote the run's config.toml before failing (issue
// "Hardening"): numeric ranges are checked when the config loads, before any
// stage runs or writes, and the error names the key and the allowed range.
TEST(Configs, OutOfRangeNumbersAreRefusedWhenTheConfigLoads) {
  std::string msg = test::error_of([] { load_config<RewardTrainConfig>("", {"--train.batch_size=0"}); });
  EXPECT_NE(msg.find("'train.batch_size'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("at least 1"), std::string::npos) << msg;
  msg = test::error_of([] { load_config<PpoConfig>("", {"--train.iterations=-3"}); });
  EXPECT_NE(msg.find("'train.iterations'"), std::string::npos) << msg;
  msg = test::error_of([] { load_config<PipelineConfig>("", {"--label.flip=0.7"}); });
  EXPECT_NE(msg.find("'label.flip'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("between 0 and 0.5"), std::string::npos) << msg;
  msg = test::error_of([] { load_config<PipelineConfig>("", {"--ppo.rollout.temperature=-1"}); });
  EXPECT_NE(msg.find("'ppo.rollout.temperature'"), std::string::npos) << msg;
  // The defaults themselves are in range.
  load_config<PipelineConfig>("", {});
}

TEST(PpoMath, GaeMatchesAHandComputedCaseAndStopsAtTheEnd) {
  auto [adv, ret] = ppo::gae(t2({0, 0, 1}, 1), t2({0.5, 0.6, 0.7}, 1), t2({1, 1, 1}, 1), 1.0, 0.95);
  EXPECT_TRUE(torch::allclose(adv, t2({0.46575f, 0.385f, 0.3f}, 1), 1e-6, 1e-6)) << adv;
  EXPECT_TRUE(torch::allclose(ret, t2({0.96575f, 0.985f, 1.0f}, 1), 1e-6, 1e-6)) << ret;
  // Padding after the reply: its values and rewards do not leak in.
  auto [padv, pret] = ppo::gae(t2({0, 1, 5}, 1), t2({0.5, 0.6, 9}, 1), t2({1, 1, 0}, 1), 1.0, 0.95);
  EXPECT_TRUE(torch::allclose(padv, t2({0.48f, 0.4f, 0.0f}, 1), 1e-6, 1e-6)) << padv;
  EXPECT_EQ(pret[0][2].item<float>(), 0.0f);
  // gamma < 1 discounts the next value.
  auto [gadv, gret] = ppo::gae(t2({0, 1}, 1), t2({0, 0}, 1), t2({1, 1}, 1), 0.5, 1.0);
  EXPECT_TRUE(torch::allclose(gadv, t2({0.5f, 1.0f}, 1)));
}

TEST(PpoMath, ClippedPolicyAndValueLossesMatchHandComputedCases) {
  const torch::Tensor lp = torch::log(t2({1.5, 0.5}, 1)), old = t2({0, 0}, 1), adv = t2({1, -1}, 1), mask = t2({1, 1}, 1);
  const ppo::PolicyLoss pl = ppo::policy_loss(lp, old, adv, mask, 0.2);
  // ratio (1.5, 0.5): max(-1.5, -1.2) = -1.2, max(0.5, 0.8) = 0.8 -> mean -0.2; both clipped.
  EXPECT_NEAR(pl.loss.item<double>(), -0.2, 1e-6);
  EXPECT_NEAR(pl.clipfrac.item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(pl.approx_kl.item<double>(), 0.25 * (std::pow(std::log(1.5), 2) + std::pow(std::log(0.5), 2)), 1e-6);
  // Inside the clip range the loss is -A * ratio, with the ratio's gradient.
  const torch::Tensor lp2 = torch::log(t2({1.1f}, 1)).requires_grad_();
  const ppo::PolicyLoss in = ppo::policy_loss(lp2, t2({0}, 1), t2({2}, 1), t2({1}, 1), 0.2);
  EXPECT_NEAR(in.loss.item<double>(), -2.2, 1e-6);
  in.loss.backward();
  EXPECT_NEAR(lp2.grad()[0][0].item<double>(), -2.2, 1e-5);  // d(-A e^lp)/dlp = -A r
  EXPECT_EQ(in.clipfrac.item<double>(), 0.0);
  // Value loss: v (1, 0), old (0.5, 0.5), returns (1, 1), clip 0.2:
  // clipped (0.7, 0.3); max((0, 1), (0.09, 0.49)) = (0.09, 1) -> 0.5 * mean = 0.2725.
  const ppo::ValueLoss vl = ppo::value_loss(t2({1, 0}, 1), t2({0.5, 0.5}, 1), t2({1, 1}, 1), mask, 0.2);
  EXPECT_NEAR(vl.loss.item<double>(), 0.2725, 1e-6);
  EXPECT_NEAR(vl.clipfrac.item<double>(), 0.5, 1e-6);
  // A shared denominator (the minibatch's token count) for micro-batches.
  EXPECT_NEAR(ppo::value_loss(t2({1, 0}, 1), t2({0.5, 0.5}, 1), t2({1, 1}, 1), mask, 0.2, 4).loss.item<double>(),
              0.2725 / 2, 1e-6);
}

TEST(PpoMath, KlEstimatorsAreUnbiasedAndK3IsNonNegative) {
  EXPECT_NEAR(ppo::kl_k1(t2({-1}, 1), t2({-2}, 1)).item<double>(), 1.0, 1e-6);
  EXPECT_NEAR(ppo::kl_k3(t2({-1}, 1), t2({-2}, 1)).item<double>(), std::exp(-1.0) - 1 + 1, 1e-6);
  EXPECT_GE(ppo::kl_k3(torch::randn({100}), torch::randn({100})).min().item<double>(), 0.0);
  // Sampling from p, both estimators average to KL(p || q).
  const torch::Tensor p = torch::tensor({0.5, 0.3, 0.2}, torch::kDouble), q = torch::tensor({0.2, 0.3, 0.5}, torch::kDouble);
  const double exact = (p * (p.log() - q.log())).sum().item<double>();
  torch::manual_seed(1);
  const torch::Tensor x = torch::multinomial(p, 200000, true);
  const torch::Tensor lp = p.log().index_select(0, x), lq = q.log().index_select(0, x);
  EXPECT_NEAR(ppo::kl_k1(lp, lq).mean().item<double>(), exact, 0.01);
  EXPECT_NEAR(ppo::kl_k3(lp, lq).mean().item<double>(), exact, 0.01);
  EXPECT_THROW(ppo::kl_estimate(lp, lq, "k2"), Error);
}

TEST(PpoMath, AdaptiveKlControllerMovesTowardsTheTarget) {
  ppo::KLController c(0.1, true, 6.0, 10000);
  c.update(12.0, 64);  // far above target: error clipped at +0.2
  EXPECT_NEAR(c.value(), 0.1 * (1 + 0.2 * 64 / 10000.0), 1e-12);
  c.update(3.0, 64);  // below: error -0.5 clipped at -0.2
  EXPECT_NEAR(c.value(), 0.1 * (1 + 0.2 * 64 / 10000.0) * (1 - 0.2 * 64 / 10000.0), 1e-12);
  ppo::KLController fixed(0.1, false, 6.0, 10000);
  fixed.update(100.0, 64);
  EXPECT_EQ(fixed.value(), 0.1);
}

TEST(PpoMath, WhiteningIgnoresPadding) {
  const torch::Tensor x = t2({1, 2, 3, 0, 4, 5, 0, 0}, 2), mask = t2({1, 1, 1, 0, 1, 1, 0, 0}, 2);
  torch::Tensor garbage = x.clone();
  garbage[0][3] = 100;
  garbage[1][2] = -50;
  const torch::Tensor a = ppo::masked_whiten(x, mask), b = ppo::masked_whiten(garbage, mask);
  EXPECT_TRUE(torch::allclose(a, b));
  EXPECT_NEAR(ppo::masked_mean(a, mask).item<double>(), 0.0, 1e-6);
  EXPECT_NEAR(ppo::masked_var(a, mask).item<double>(), 1.0, 1e-4);
  EXPECT_EQ(a[0][3].item<float>(), 0.0f);
}

TEST(PpoMath, ReplyMaskRewardsAndTheMissingEosPenalty) {
  const torch::Tensor tokens = torch::tensor({5, 2, 7, 7, 5, 6, 7, 8}, torch::kLong).view({2, 4});
  const torch::Tensor mask = ppo::response_mask(tokens, {2});
  EXPECT_TRUE(torch::equal(mask, t2({1, 1, 0, 0, 1, 1, 1, 1}, 2)));
  const torch::Tensor finished = torch::tensor({true, false});
  const torch::Tensor scores = ppo::apply_missing_eos_penalty(torch::tensor({1.0f, 1.0f}), finished, 0.5);
  EXPECT_TRUE(torch::allclose(scores, torch::tensor({1.0f, 0.5f})));
  const torch::Tensor r = ppo::token_rewards(scores, t2({0.1f, 0.2f, 9, 9, 0, 0, 0, 0.4f}, 2), mask, 0.5);
  EXPECT_TRUE(torch::allclose(r, t2({-0.05f, -0.1f + 1.0f, 0, 0, 0, 0, 0, -0.2f + 0.5f}, 2), 1e-6, 1e-6)) << r;
}

// Critic-free advantages on hand-made groups of K = 3: scores 1, 2, 3 (mean
// 2, Bessel std 1) and a group of equal scores (no signal, no NaN).
TEST(PpoMath, GroupRelativeAdvantagesMatchHandComputedGroups) {
  const torch::Tensor scores = torch::tensor({1.0f, 2.0f, 3.0f, 5.0f, 5.0f, 5.0f});
  const auto expect = [&](ppo::GroupAdvantage type, std::vector<float> want, const char* what) {
    const torch::Tensor a = ppo::group_advantages(scores, 3, type);
    EXPECT_TRUE(torch::allclose(a, torch::tensor(want), 1e-4, 1e-5)) << what << ": " << a;
  };
  expect(ppo::GroupAdvantage::kGrpo, {-1 / 1.0001f, 0.0f, 1 / 1.0001f, 0.0f, 0.0f, 0.0f}, "grpo");
  expect(ppo::GroupAdvantage::kDrGrpo, {-1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 0.0f}, "dr_grpo");
  // RLOO: 1 - (2 + 3) / 2, 2 - (1 + 3) / 2, 3 - (1 + 2) / 2.
  expect(ppo::GroupAdvantage::kRloo, {-1.5f, 0.0f, 1.5f, 0.0f, 0.0f, 0.0f}, "rloo");
  EXPECT_NE(test::error_of([&] { ppo::group_advantages(scores, 4, ppo::GroupAdvantage::kGrpo); }).find("groups of 4"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { ppo::parse_group_advantage("gae2"); }).find("grpo, dr_grpo, rloo"), std::string::npos);

  // Aggregation of per-token losses [[1, 2, 3], [4, -, -]].
  const torch::Tensor loss = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 9.0f, 9.0f}).view({2, 3});
  const torch::Tensor mask = torch::tensor({1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f}).view({2, 3});
  EXPECT_NEAR(ppo::aggregate_token_loss(loss, mask, "sequence", 3).item<double>(), (2.0 + 4.0) / 2, 1e-6);
  EXPECT_NEAR(ppo::aggregate_token_loss(loss, mask, "token", 3).item<double>(), 10.0 / 4, 1e-6);
  EXPECT_NEAR(ppo::aggregate_token_loss(loss, mask, "constant", 3).item<double>(), 10.0 / 6, 1e-6);
  // Split into micro-batches of one row, with the whole batch's counts, the
  // parts sum to the whole batch's loss in every mode.
  for (const char* mode : {"sequence", "token", "constant"}) {
    double parts = 0;
    for (int64_t row = 0; row < 2; ++row) {
      parts += ppo::aggregate_token_loss(loss.narrow(0, row, 1), mask.narrow(0, row, 1), mode, 3, 2, 4).item<double>();
    }
    EXPECT_NEAR(parts, ppo::aggregate_token_loss(loss, mask, mode, 3).item<double>(), 1e-6) << mode;
  }
  EXPECT_NE(test::error_of([&] { ppo::aggregate_token_loss(loss, mask, "mean", 3); }).find("sequence, token, constant"),
            std::string::npos);
}

// What every online test run (PPO, GRPO) shares: the tiny policy and its
// prompts in `dir`, no reward model (the test gives one), no validation.
template <class Config>
Config tiny_online_config(const test::TempDir& dir, const std::string& out) {
  Config c;
  c.out_dir = dir.file(out);
  c.policy = dir.file("policy");
  c.reward_model = "";
  c.prompts = dir.file("prompts.jsonl");
  c.validation.prompts = "";
  c.rollout.max_new_tokens = 12;
  c.reward.missing_eos_penalty = 0;
  c.train.lr = 3e-3;
  // One thread: the tiny model's matrices gain nothing from two, and two
  // OpenBLAS threads on a busy machine spin waiting for each other (a PPO
  // test took 150 s instead of 12 beside two other jobs on two cores).
  c.train.threads = 1;
  c.kl.coef = 0.01;
  return c;
}

struct PpoFixture {
  test::TempDir dir{"ppo"};
  int32_t vocab = 0;
  PpoFixture() { vocab = test::write_tiny_ppo_inputs(dir.path()); }
  PpoConfig config(const std::string& out) const {
    PpoConfig c = tiny_online_config<PpoConfig>(dir, out);
    c.rollout.batch_size = 16;
    c.train.minibatches = 2;
    c.train.micro_batch = 8;
    c.train.ppo_epochs = 2;
    c.train.value_lr = 3e-3;
    return c;
  }
  // Toy reward: how many reply tokens come from a tenth of the vocabulary
  // (about 1 in 10 tokens of the untrained model).
  RewardFn reward() const {
    const int32_t limit = vocab / 10;
    return [limit](const SampledReplies& r) { return ((r.response_ids < limit).to(torch::kFloat) * r.response_mask).sum(1); };
  }
};

std::vector<double> reward_curve(const std::string& metrics) {
  std::vector<double> out;
  std::istringstream in(read_file(metrics));
  std::string line;
  while (std::getline(in, line)) {
    const Json row = Json::parse(line);
    if (row.contains("env/reward_mean")) out.push_back(row["env/reward_mean"].get<double>());
  }
  return out;
}

// The means of a curve's first and last `n` points.
std::pair<double, double> first_and_last_means(const std::vector<double>& curve, size_t n) {
  double first = 0, last = 0;
  for (size_t i = 0; i < n; ++i) {
    first += curve[i] / static_cast<double>(n);
    last += curve[curve.size() - n + i] / static_cast<double>(n);
  }
  return {first, last};
}

TEST(Ppo, AFewIterationsRaiseAToyReward) {
  PpoFixture f;
  PpoConfig c = f.config("toy");
  c.train.iterations = 60;
  c.rollout.batch_size = 32;
  const auto start = std::chrono::steady_clock::now();
  run_ppo(c, f.reward());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::vector<double> curve = reward_curve(c.out_dir + "/metrics.jsonl");
  ASSERT_EQ(curve.size(), 60u);
  const auto [first, last] = first_and_last_means(curve, 5);
  EXPECT_GT(last, 2 * first) << "the toy reward did not rise: " << first << " -> " << last;
  std::printf("toy reward %.2f -> %.2f in %.1f s\n", first, last, seconds);
}

// `run` to the end, then as a run killed right after iteration 2's
// checkpoint and started again (the 4-iteration runs below).
void run_killed_after_2_and_resumed(const std::string& out_dir, const std::function<void()>& run) {
  run();
  remove_all(out_dir + "/checkpoints/step-0000004");
  mark_checkpoint(out_dir, "step-0000002");
  run();
}

TEST(Ppo, ResumeFromACheckpointEqualsTheUninterruptedRun) {
  PpoFixture f;
  PpoConfig straight = f.config("straight");
  straight.train.iterations = 4;
  straight.train.checkpoint_interval = 2;
  run_ppo(straight, f.reward());
  PpoConfig killed = f.config("killed");
  killed.train.iterations = 4;
  killed.train.checkpoint_interval = 2;
  run_killed_after_2_and_resumed(killed.out_dir, [&] { run_ppo(killed, f.reward()); });
  EXPECT_EQ(read_file(resolve_checkpoint(killed.out_dir) + "/model.safetensors"),
            read_file(resolve_checkpoint(straight.out_dir) + "/model.safetensors"));
  EXPECT_EQ(read_file(resolve_checkpoint(killed.out_dir) + "/value_model.safetensors"),
            read_file(resolve_checkpoint(straight.out_dir) + "/value_model.safetensors"));
  EXPECT_EQ(reward_curve(killed.out_dir + "/metrics.jsonl"), reward_curve(straight.out_dir + "/metrics.jsonl"));
}

// Which settings may change on resume, as the scaffold declares them for
// PPO: a fixed kl.coef is a setting (the new value applies), an adaptive one
// is state (the saved value continues), another policy is refused.
TEST(Ppo, OnResumeAFixedKlCoefChangesAnAdaptiveOneContinuesAndAnotherPolicyIsRefused) {
  PpoFixture f;
  auto kl_coefs = [](const std::string& metrics) {
    std::vector<double> out;
    for (const std::string& line : test::file_lines(metrics)) out.push_back(Json::parse(line)["objective/kl_coef"]);
    return out;
  };
  for (const bool adaptive : {false, true}) {
    PpoConfig c = f.config(adaptive ? "adaptive" : "fixed");
    c.train.iterations = 4;
    c.train.checkpoint_interval = 2;
    c.kl.adaptive = adaptive;
    run_ppo(c, f.reward());
    const std::vector<double> before = kl_coefs(c.out_dir + "/metrics.jsonl");
    remove_all(c.out_dir + "/checkpoints/step-0000004");
    mark_checkpoint(c.out_dir, "step-0000002");
    c.kl.coef = 0.5;
    run_ppo(c, f.reward());
    const std::vector<double> after = kl_coefs(c.out_dir + "/metrics.jsonl");
    ASSERT_EQ(after.size(), 4u);
    EXPECT_EQ(after[0], before[0]);
    EXPECT_EQ(after[1], before[1]);
    if (adaptive) {
      EXPECT_EQ(after[2], before[2]);  // the controller's saved value, not 0.5
      EXPECT_NE(after[2], 0.5);
    } else {
      EXPECT_EQ(after[2], 0.5);
      EXPECT_EQ(after[3], 0.5);
    }
  }
  PpoConfig other = f.config("fixed");
  other.policy = f.dir.file("elsewhere");
  const std::string err = test::error_of([&] { run_ppo(other, f.reward()); });
  EXPECT_NE(err.find("policy ("), std::string::npos) << err;
  EXPECT_NE(err.find("another out_dir"), std::string::npos) << err;
}

// PPO with LoRA: adapters train over the SFT policy's weights, which stay
// as they were (the reference is those very tensors); the written policy is
// the merged model with its PEFT adapters beside it; resuming continues the
// adapters exactly.
TEST(Ppo, LoraTrainsAdaptersOverTheUnchangedBaseAndResumes) {
  PpoFixture f;
  auto lora_config = [&](const std::string& out) {
    PpoConfig c = f.config(out);
    c.lora.enabled = true;
    c.lora.rank = 4;
    c.train.lr = 2e-2;
    c.train.iterations = 4;
    c.train.checkpoint_interval = 2;
    return c;
  };
  PpoConfig straight = lora_config("lora-straight");
  run_ppo(straight, f.reward());
  const std::string out = resolve_checkpoint(straight.out_dir);
  for (const char* file : {"adapter_model.safetensors", "adapter_config.json", "value_adapters.safetensors"}) {
    EXPECT_TRUE(path_exists(join_path(out, file))) << file;
  }
  EXPECT_FALSE(path_exists(join_path(out, "value_model.safetensors")));
  const TensorMap sft = load_safetensors(join_path(resolve_checkpoint(f.dir.file("policy")), "model.safetensors")).tensors;
  const TensorMap ppo = load_safetensors(join_path(out, "model.safetensors")).tensors;
  int changed = 0, same = 0;
  for (const auto& [name, t] : sft) {
    const bool adapted = name.find("c_attn") != std::string::npos || name.find("c_proj.weight") != std::string::npos ||
                         name.find("c_fc.weight") != std::string::npos;
    const bool equal = torch::equal(t, ppo.at(name));
    if (adapted && name.find(".weight") != std::string::npos) changed += equal ? 0 : 1;
    else EXPECT_TRUE(equal) << name << " is not adapted and must stay the SFT policy's";
    same += equal ? 1 : 0;
  }
  EXPECT_GT(changed, 0) << "the adapters did not learn";
  EXPECT_GT(same, 0);

  PpoConfig killed = lora_config("lora-killed");
  run_killed_after_2_and_resumed(killed.out_dir, [&] { run_ppo(killed, f.reward()); });
  for (const char* file : {"adapter_model.safetensors", "value_adapters.safetensors", "model.safetensors"}) {
    EXPECT_EQ(read_file(join_path(resolve_checkpoint(killed.out_dir), file)), read_file(join_path(out, file))) << file;
  }
  EXPECT_EQ(reward_curve(killed.out_dir + "/metrics.jsonl"), reward_curve(straight.out_dir + "/metrics.jsonl"));
}

TEST(Ppo, FreshRepliesGoToTheLabelStoreWhileItRuns) {
  PpoFixture f;
  PpoConfig c = f.config("live");
  c.train.iterations = 4;
  c.feedback.db = c.out_dir + "-labels.sqlite";
  c.feedback.every = 2;
  c.feedback.prompts = 3;
  std::vector<FreshPair> pushed;
  const FreshPairsFn store_sink = label_store_sink(c.feedback, "ppo", c.rollout.temperature);
  ASSERT_TRUE(store_sink);
  run_ppo(c, f.reward(), {}, [&](const std::vector<FreshPair>& pairs) {
    pushed.insert(pushed.end(), pairs.begin(), pairs.end());
    store_sink(pairs);
  });
  ASSERT_EQ(pushed.size(), 6u) << "iterations 2 and 4, 3 prompts each";
  EXPECT_EQ(pushed[0].iteration, 2);
  EXPECT_EQ(pushed[5].iteration, 4);
  EXPECT_TRUE(pushed[0].conversation.is_array());
  labels::LabelStore store(c.feedback.db);
  const auto comps = store.comparisons();
  EXPECT_GE(comps.size(), 1u);
  EXPECT_LE(comps.size(), 6u) << "identical reply pairs are not queued";
  for (const auto& cmp : comps) {
    const auto cand = store.candidate(cmp.candidates[0]);
    EXPECT_EQ(cand.policy.rfind("ppo@iter", 0), 0u) << cand.policy;
  }
  EXPECT_TRUE(label_store_sink(OnlineFeedbackConfig{}, "ppo", 1.0) == nullptr) << "off by default";
}

// ---- GRPO and RLOO

GrpoConfig grpo_config(const PpoFixture& f, const std::string& out) {
  GrpoConfig c = tiny_online_config<GrpoConfig>(f.dir, out);
  c.rollout.prompts = 8;
  c.rollout.samples = 4;
  c.train.micro_batch = 16;
  return c;
}

// K samples of a prompt share its KV cache; they are the samples generate()
// draws for the prompt repeated K times with the same row seeds.
TEST(Grpo, SamplesThatShareAPromptCacheEqualSamplesOfRepeatedPrompts) {
  PpoFixture f;
  LoadedPolicy p = load_policy(resolve_checkpoint(f.dir.file("policy")));
  const std::vector<std::vector<int32_t>> prompts = {{5, 6, 7, 8, 9}, {10, 11}, {12, 13, 14}};
  SamplingConfig sc;
  sc.max_new_tokens = 10;
  std::vector<std::vector<int32_t>> repeated;
  std::vector<uint64_t> seeds;
  for (const auto& q : prompts) {
    for (int j = 0; j < 3; ++j) {
      repeated.push_back(q);
      seeds.push_back(100 + seeds.size());
    }
  }
  const Generation shared = generate_samples(p.model, prompts, 3, sc, {2}, 0, seeds);
  const Generation plain = generate(p.model, repeated, sc, {2}, 0, seeds);
  EXPECT_TRUE(torch::equal(shared.tokens, plain.tokens));
  EXPECT_TRUE(torch::equal(shared.lengths, plain.lengths));
  EXPECT_TRUE(torch::allclose(shared.logprobs, plain.logprobs, 1e-4, 1e-5));
  EXPECT_FALSE(torch::equal(shared.tokens[0], shared.tokens[1])) << "the samples of a prompt differ";
}

TEST(Grpo, AFewIterationsRaiseAToyRewardWithEachAdvantage) {
  PpoFixture f;
  for (const char* advantage : {"grpo", "rloo"}) {
    GrpoConfig c = grpo_config(f, std::string("toy-") + advantage);
    c.train.advantage = advantage;
    if (c.train.advantage == "rloo") c.kl.mode = "reward";
    c.train.iterations = 60;
    c.train.epochs = 2;
    c.train.minibatches = 2;
    run_grpo(c, f.reward());
    const std::vector<double> curve = reward_curve(c.out_dir + "/metrics.jsonl");
    ASSERT_EQ(curve.size(), 60u);
    const auto [first, last] = first_and_last_means(curve, 5);
    EXPECT_GT(last, 2 * first) << advantage << ": the toy reward did not rise: " << first << " -> " << last;
    std::printf("%s: toy reward %.2f -> %.2f\n", advantage, first, last);
  }
}

// Two epochs over two shuffled minibatches (the clipped ratio at work), the
// KL as a k3 loss term and Dr. GRPO's constant aggregation: a run killed
// after its checkpoint and resumed ends with the uninterrupted run's weights
// and metrics.
TEST(Grpo, ResumeFromACheckpointEqualsTheUninterruptedRun) {
  PpoFixture f;
  auto config = [&](const std::string& out) {
    GrpoConfig c = grpo_config(f, out);
    c.train.advantage = "dr_grpo";
    c.train.loss_aggregation = "constant";
    c.train.epochs = 2;
    c.train.minibatches = 2;
    c.train.micro_batch = 8;
    c.train.iterations = 4;
    c.train.checkpoint_interval = 2;
    return c;
  };
  const GrpoConfig straight = config("straight");
  run_grpo(straight, f.reward());
  const GrpoConfig killed = config("killed");
  run_killed_after_2_and_resumed(killed.out_dir, [&] { run_grpo(killed, f.reward()); });
  EXPECT_EQ(read_file(resolve_checkpoint(killed.out_dir) + "/model.safetensors"),
            read_file(resolve_checkpoint(straight.out_dir) + "/model.safetensors"));
  EXPECT_EQ(read_file(resolve_checkpoint(killed.out_dir) + "/optimizer.safetensors"),
            read_file(resolve_checkpoint(straight.out_dir) + "/optimizer.safetensors"));
  EXPECT_EQ(reward_curve(killed.out_dir + "/metrics.jsonl"), reward_curve(straight.out_dir + "/metrics.jsonl"));
  const Json row = Json::parse(test::file_lines(straight.out_dir + "/metrics.jsonl").back());
  EXPECT_GT(row.at("policy/approxkl").get<double>(), 0.0) << "the second epoch is off-policy";
  EXPECT_TRUE(row.contains("objective/k3_per_token"));
}

// Online RLHF with GRPO: two replies of one group go out as a comparison,
// with no extra sampling.
TEST(Grpo, TwoRepliesOfAGroupGoToTheRatersWhileItRuns) {
  PpoFixture f;
  GrpoConfig c = grpo_config(f, "live");
  c.train.iterations = 4;
  c.feedback.every = 2;
  c.feedback.prompts = 3;
  std::vector<FreshPair> pushed;
  run_grpo(c, f.reward(), {}, [&](const std::vector<FreshPair>& pairs) {
    pushed.insert(pushed.end(), pairs.begin(), pairs.end());
  });
  ASSERT_EQ(pushed.size(), 6u) << "iterations 2 and 4, 3 prompts each";
  EXPECT_EQ(pushed[0].iteration, 2);
  EXPECT_EQ(pushed[5].iteration, 4);
  int differ = 0;
  for (const FreshPair& p : pushed) differ += p.reply_a != p.reply_b ? 1 : 0;
  EXPECT_GT(differ, 0) << "two samples of a prompt, not one reply twice";
}

TEST(Grpo, BadSettingsAreRefusedBeforeAnyModelLoadsWithTheKeyNamed) {
  PpoFixture f;
  auto error = [&](const std::function<void(GrpoConfig&)>& edit, int world = 1) {
    GrpoConfig c = grpo_config(f, "bad");
    edit(c);
    return test::error_of([&] { validate_grpo_config(c, world); });
  };
  EXPECT_NE(error([](GrpoConfig& c) { c.train.advantage = "ppo"; }).find("grpo, dr_grpo, rloo"), std::string::npos);
  EXPECT_NE(error([](GrpoConfig& c) { c.kl.mode = "both"; }).find("kl.mode"), std::string::npos);
  EXPECT_NE(error([](GrpoConfig& c) { c.train.loss_aggregation = "sum"; }).find("sequence, token, constant"),
            std::string::npos);
  EXPECT_NE(error([](GrpoConfig& c) { c.rollout.prompts = 3; }, 2).find("rollout.prompts"), std::string::npos);
  EXPECT_NE(error([](GrpoConfig& c) { c.train.minibatches = 5; }).find("train.minibatches"), std::string::npos);
  EXPECT_NE(error([](GrpoConfig& c) { c.reward.model = 0; }).find("reward.rubric"), std::string::npos);
  EXPECT_NE(error([](GrpoConfig& c) { c.reward_model = ""; }).find("reward_model"), std::string::npos);
  EXPECT_EQ(rloo_defaults().train.advantage, "rloo");
  EXPECT_EQ(rloo_defaults().kl.mode, "reward");
  // The rubric as a reward needs prompts with facts; these have none.
  GrpoConfig c = grpo_config(f, "rubric");
  c.reward.model = 0;
  c.reward.rubric = 1;
  c.train.iterations = 1;
  EXPECT_NE(test::error_of([&] { run_grpo(c); }).find("reward.rubric"), std::string::npos);
}

// The pipeline trains every listed algorithm from the same SFT model (the
// online ones against the same reward model, DPO on the same labels) and
// compares them all with SFT.
TEST(Grpo, ThePipelineTrainsAndComparesEveryListedAlgorithmFromTheSameSftModel) {
  PipelineConfig p;
  p.out_dir = "/tmp/run";
  p.stages = {"pretrain", "sft", "candidates", "label", "rm", "grpo", "ppo", "rloo", "dpo", "compare"};
  const PipelineConfig w = wire_pipeline(p);
  EXPECT_EQ(w.compare.names, (std::vector<std::string>{"ppo", "dpo", "grpo", "rloo", "sft"}));
  EXPECT_EQ(w.compare.policies.back(), "/tmp/run/sft");
  for (const std::string& policy : {w.ppo.policy, w.dpo.policy, w.grpo.policy, w.rloo.policy}) {
    EXPECT_EQ(policy, "/tmp/run/sft");
  }
  EXPECT_EQ(w.grpo.reward_model, "/tmp/run/rm");
  EXPECT_EQ(w.rloo.reward_model, "/tmp/run/rm");
  EXPECT_EQ(w.dpo.data.preferences, w.rm.data.preferences);
  EXPECT_EQ(w.rloo.train.advantage, "rloo");
  EXPECT_EQ(w.rloo.out_dir, "/tmp/run/rloo");
  // The report's line for each: DPO's held-out pairs, the online stages' validations.
  const Json summary = {
      {"dpo", {{"seconds", 269.0}, {"eval", {{"rewards/accuracies", 0.634}, {"rewards/margins", 0.164},
                                             {"logps/chosen", -15.0}, {"logps/rejected", -18.2}}}}},
      {"rloo", {{"seconds", 533.0}, {"validations", Json::array({{{"iteration", 0}, {"gold", 0.79}, {"kl", 0.0}},
                                                                  {{"iteration", 60}, {"gold", 3.38}, {"kl", 3.4}}})}}}};
  const std::string report = pipeline_report(summary);
  EXPECT_NE(report.find("| dpo | 4m29s | held-out pairs: accuracy 63.4%, margin 0.164"), std::string::npos) << report;
  EXPECT_NE(report.find("| rloo | 8m53s | validation gold 0.79, 3.38"), std::string::npos) << report;
  // Without them, the demo's comparison is PPO against SFT as before.
  EXPECT_EQ(wire_pipeline(PipelineConfig()).compare.names, (std::vector<std::string>{"ppo", "sft"}));
}

// One setting makes every sampling stage sample in bf16, another every
// training stage train in bf16; a bad value names its key before anything
// runs; rollouts sampled in bf16 train as usual.
TEST(Pipeline, OneSettingGivesEveryStageItsSamplingOrTrainingPrecision) {
  PipelineConfig p;
  p.out_dir = "/tmp/run";
  const PipelineConfig plain = wire_pipeline(p);
  EXPECT_EQ(plain.ppo.rollout.weights, "fp32");
  p.sampling_weights = "bf16";
  const PipelineConfig w = wire_pipeline(p);
  for (const std::string& weights : {w.candidates.weights, w.ppo.rollout.weights, w.ppo.validation.weights,
                                     w.grpo.rollout.weights, w.grpo.validation.weights, w.rloo.rollout.weights,
                                     w.rloo.validation.weights, w.compare.sampling.weights}) {
    EXPECT_EQ(weights, "bf16");
  }
  p.sampling_weights = "fp16";
  EXPECT_NE(test::error_of([&] { wire_pipeline(p); }).find("pipeline.sampling_weights = 'fp16'"), std::string::npos);
  p.sampling_weights = "bf16";

  // The same for training: one precision setting reaches every training
  // stage (and the active-labelling reward models); stages keep their own
  // without it.
  EXPECT_EQ(plain.rm.train.precision, "fp32");
  p.precision = "bf16";
  const PipelineConfig t = wire_pipeline(p);
  for (const std::string& precision : {t.pretrain.train.precision, t.sft.train.precision, t.rm.train.precision,
                                       t.ppo.train.precision, t.dpo.train.precision, t.grpo.train.precision,
                                       t.rloo.train.precision, t.active.rm.train.precision}) {
    EXPECT_EQ(precision, "bf16");
  }
  p.precision = "fp16";
  EXPECT_NE(test::error_of([&] { wire_pipeline(p); }).find("pipeline.precision = 'fp16'"), std::string::npos);
  // "auto" is one of the two, the same for training and sampling, and the
  // report says which.
  p.precision = p.sampling_weights = "auto";
  const PipelineConfig a = wire_pipeline(p);
  EXPECT_TRUE(a.precision == "bf16" || a.precision == "fp32") << a.precision;
  EXPECT_EQ(a.sampling_weights, a.precision);
  EXPECT_EQ(a.rm.train.precision, a.precision);
  EXPECT_EQ(a.candidates.weights, a.precision);
  Json summary = {{"program", "test"}, {"seed", 0}, {"precision", "bf16"}, {"sampling_weights", "bf16"},
                  {"machine", "Some CPU (family 6, model 143; AVX-512 BF16), 2 CPUs"}};
  EXPECT_NE(pipeline_report(summary).find("training in bf16; sampling in bf16. Machine: Some CPU (family 6, "
                                          "model 143; AVX-512 BF16), 2 CPUs."),
            std::string::npos)
      << pipeline_report(summary);

  PpoFixture f;
  GrpoConfig bad = grpo_config(f, "bad");
  bad.rollout.weights = "int8";
  EXPECT_NE(test::error_of([&] { validate_grpo_config(bad, 1); }).find("rollout.weights"), std::string::npos);
  PpoConfig bad_ppo = f.config("bad");
  bad_ppo.validation.weights = "half";
  EXPECT_NE(test::error_of([&] { validate_ppo_config(bad_ppo, 1); }).find("validation.weights"), std::string::npos);

  PpoConfig c = f.config("bf16");
  c.train.iterations = 2;
  c.rollout.weights = "bf16";
  run_ppo(c, f.reward());
  const std::vector<std::string> rows = test::file_lines(c.out_dir + "/metrics.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  for (const std::string& line : rows) {
    const Json row = Json::parse(line);
    EXPECT_TRUE(std::isfinite(row["objective/kl"].get<double>())) << line;
    EXPECT_GT(row["reply/length"].get<double>(), 0) << line;
  }
}

// One setting gives every stage its thread count; without it stages keep
// their own.
TEST(Pipeline, OneThreadsSettingReachesEveryStage) {
  PipelineConfig p;
  p.out_dir = "/tmp/run";
  p.rm.train.threads = 2;
  EXPECT_EQ(wire_pipeline(p).rm.train.threads, 2);
  EXPECT_EQ(wire_pipeline(p).ppo.train.threads, 0);
  p.threads = 1;
  const PipelineConfig w = wire_pipeline(p);
  for (int t : {w.pretrain.train.threads, w.sft.train.threads, w.candidates.threads, w.active.rm.train.threads,
                w.rm.train.threads, w.ppo.train.threads, w.dpo.train.threads, w.grpo.train.threads,
                w.rloo.train.threads, w.compare.threads}) {
    EXPECT_EQ(t, 1);
  }
}

// One setting puts every training stage on a device; without it stages keep
// their own; a device this machine lacks is refused before any stage runs.
TEST(Pipeline, OneDeviceSettingReachesEveryTrainingStage) {
  PipelineConfig p;
  p.out_dir = "/tmp/run";
  p.ppo.train.device = "auto";
  EXPECT_EQ(wire_pipeline(p).ppo.train.device, "auto");
  EXPECT_EQ(wire_pipeline(p).rm.train.device, "cpu");
  p.device = "cpu";
  const PipelineConfig w = wire_pipeline(p);
  for (const std::string& d : {w.pretrain.train.device, w.sft.train.device, w.rm.train.device, w.ppo.train.device,
                               w.dpo.train.device, w.grpo.train.device, w.rloo.train.device,
                               w.active.rm.train.device}) {
    EXPECT_EQ(d, "cpu");
  }
  p.device = "tpu";
  EXPECT_NE(test::error_of([&] { wire_pipeline(p); }).find("pipeline.device: unknown device 'tpu'"), std::string::npos);
  if (!torch::cuda::is_available()) {
    p.device = "cuda";
    EXPECT_NE(test::error_of([&] { wire_pipeline(p); }).find("pipeline.device: device 'cuda' was asked for but CUDA is not available"), std::string::npos);
  }
}

// The seeds table: one row per run from its summary alone, mean and range,
// and the runs that miss each bar named.
TEST(Pipeline, SeedsReportGivesEachRunsHeadlineMeanRangeAndTheRunsBelowABar) {
  const auto run = [](int64_t seed, double rm, double win, double low, double kl) {
    return Json{{"program", "0.1.0+abc"},
                {"seed", seed},
                {"rm", {{"eval", {{"gold_accuracy", rm}, {"gold_pairs", 10304}}}}},
                {"ppo", {{"validations", Json::array({{{"kl", 0.0}}, {{"kl", kl}}})}}},
                {"compare",
                 {{"policies", Json::array({{{"name", "ppo"}, {"mean_gold", 4.68}}, {{"name", "sft"}, {"mean_gold", 1.42}}})},
                  {"pairwise", Json::array({{{"a", "ppo"}, {"b", "sft"}, {"judge", "reward_model"}, {"a_win_rate", 0.99},
                                             {"ci95", {0.98, 1.0}}, {"wins", 1}, {"ties", 0}, {"losses", 0}, {"n", 1}},
                                            {{"a", "ppo"}, {"b", "sft"}, {"judge", "gold"}, {"a_win_rate", win},
                                             {"ci95", {low, win + 0.04}}, {"wins", 192}, {"ties", 17}, {"losses", 31},
                                             {"n", 240}}})}}}};
  };
  const std::string md = seeds_report({{"runs/demo", run(0, 0.856, 0.835, 0.792, 3.95)},
                                       {"runs/seed2", run(2, 0.849, 0.77, 0.73, 4.10)},
                                       {"runs/seed3", run(3, 0.87, 0.70, 0.59, 5.0)}});
  EXPECT_NE(md.find("| runs/demo | 0 | 85.6% (10,304 pairs) | 83.5% | [79.2%, 87.5%] | 192 / 17 / 31 | 4.68 / 1.42 | 3.95 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("- RM vs gold: mean 85.8, range 84.9-87.0 (3 runs)"), std::string::npos) << md;
  EXPECT_NE(md.find("- PPO win rate vs SFT by gold: mean 76.8, range 70.0-83.5 (3 runs)"), std::string::npos) << md;
  EXPECT_NE(md.find("RM >= 85.0% vs gold: missed by 1 of 3 (runs/seed2)"), std::string::npos) << md;
  // Seed 3's win rate is on the bar but its interval's low end is not above 60%.
  EXPECT_NE(md.find("interval's low end above 60.0%: missed by 1 of 3 (runs/seed3)"), std::string::npos) << md;
  EXPECT_NE(md.find("- Program: 0.1.0+abc"), std::string::npos) << md;
  // A run without a comparison misses the PPO bar rather than passing it; runs
  // from different programs are flagged.
  Json partial = run(4, 0.9, 0.8, 0.7, 3.0);
  partial.erase("compare");
  partial["program"] = "0.1.0+def";
  const std::string two = seeds_report({{"a", run(0, 0.9, 0.8, 0.7, 3.0)}, {"b", partial}});
  EXPECT_NE(two.find("| b | 4 | 90.0% (10,304 pairs) | - | - | - | - | 3.00 |"), std::string::npos) << two;
  EXPECT_NE(two.find("missed by 1 of 2 (b)"), std::string::npos) << two;
  EXPECT_NE(two.find("RM >= 85.0% vs gold: met by all 2 runs"), std::string::npos) << two;
  EXPECT_NE(two.find("Programs (the runs differ!): 0.1.0+abc, 0.1.0+def"), std::string::npos) << two;
  // A summary without the interval or the policies' means (an older or
  // hand-edited run) gives dashes and misses the PPO bar; it does not crash.
  Json old_run = run(5, 0.9, 0.8, 0.7, 3.0);
  old_run["compare"].erase("policies");
  old_run["compare"]["pairwise"][1].erase("ci95");
  const std::string one = seeds_report({{"old", old_run}});
  EXPECT_NE(one.find("| old | 5 | 90.0% (10,304 pairs) | 80.0% | [-, -] | 192 / 17 / 31 | - / - | 3.00 |"),
            std::string::npos)
      << one;
  EXPECT_NE(one.find("interval's low end above 60.0%: missed by 1 of 1 (old)"), std::string::npos) << one;
}

TEST(Pipeline, ActiveLabellingUsesTheRewardModelStagesStoreRaterAndHeldOutPrompts) {
  for (int64_t seed : {0, 3}) {
    PipelineConfig p;
    p.out_dir = "/tmp/run";
    p.seed = seed;
    p.label_selection = "active";
    p.rm.data.eval_fraction = 0.15;
    const PipelineConfig w = wire_pipeline(p);
    EXPECT_EQ(w.active.db, w.rm.data.preferences);
    EXPECT_EQ(w.active.db, w.candidates.db);
    EXPECT_EQ(w.active.out_dir, "/tmp/run/active");
    EXPECT_EQ(w.active.rm.init_from, "/tmp/run/sft");
    EXPECT_EQ(w.active.rater, w.simulated_rater);
    EXPECT_EQ(w.active.simulated.seed, w.label.seed);
    // The loop holds out exactly the prompts the reward model stage evaluates on.
    EXPECT_EQ(w.active.rm.train.seed, w.rm.train.seed) << "seed " << seed;
    EXPECT_DOUBLE_EQ(w.active.eval_fraction, 0.15);
  }
  const Json summary = {{"label", {{"seconds", 600.0}, {"selected", 8000}, {"held_out_labels", 2900},
                                   {"strategy", "uncertainty"}, {"labels", 10900}}}};
  const std::string report = pipeline_report(summary);
  EXPECT_NE(report.find("8,000 simulated labels chosen by uncertainty + 2,900 on held-out prompts"), std::string::npos)
      << report;
}

}  // namespace
}  // namespace rlhf

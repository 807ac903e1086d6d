// Hugging Face checkpoints of each family we load (GPT-2 with an untied
// head, Llama 3 and 2, Mistral, Qwen2, Qwen3, SmolLM2), against what
// `transformers` computes on the same random weights
// (tests/fixtures/hf/*, written by tools/make_hf_fixtures.py): logits, greedy
// continuations, batched KV-cache generation, and the folder we write back.
#include <gtest/gtest.h>

#include "common/fs.h"
#include "policy/adapt.h"
#include "policy/checkpoint.h"
#include "policy/generate.h"
#include "policy/gpt.h"
#include "policy/llama.h"
#include "tests/test_util.h"
#include "train/safetensors.h"

namespace rlhf {
namespace {

const char* const kFamilies[] = {"gpt2_untied", "llama3", "llama2", "mistral", "qwen2", "qwen3", "smollm2"};

std::string fixture_dir(const std::string& family) {
  return join_path(test::source_dir(), "tests/fixtures/hf/" + family);
}

GPT load_hf(const std::string& dir) {
  const GPTConfig config = gpt_config_from_hf(read_json_file(join_path(dir, "config.json")), dir);
  GPT model(config);
  load_weights(*model, load_model_tensors(dir), dir);
  model->eval();
  return model;
}

std::vector<int32_t> ids_of(const torch::Tensor& row) {
  const torch::Tensor r = row.to(torch::kInt).contiguous();
  return std::vector<int32_t>(r.data_ptr<int32_t>(), r.data_ptr<int32_t>() + r.numel());
}

class Family : public testing::TestWithParam<const char*> {};

TEST_P(Family, LogitsAndGreedyMatchTransformers) {
  const std::string dir = fixture_dir(GetParam());
  GPT model = load_hf(dir);
  const TensorMap expected = load_safetensors(join_path(dir, "expected.safetensors")).tensors;
  const torch::Tensor ids = expected.at("input_ids");
  torch::NoGradGuard no_grad;
  const torch::Tensor logits = model->forward(ids);
  EXPECT_LE((logits - expected.at("logits")).abs().max().item<double>(), 1e-4) << GetParam();
  SamplingConfig greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 32;
  const Generation g = generate(model, {ids_of(ids[0])}, greedy, {}, 0);
  EXPECT_EQ(ids_of(g.tokens[0]), ids_of(expected.at("greedy")[0])) << GetParam();
}

TEST_P(Family, BatchedCachedGenerationEqualsTheFullForwardPass) {
  GPT model = load_hf(fixture_dir(GetParam()));
  const TensorMap expected = load_safetensors(join_path(fixture_dir(GetParam()), "expected.safetensors")).tensors;
  const torch::Tensor ids = expected.at("input_ids");
  // Rows of different lengths: the shorter is left-padded.
  const std::vector<std::vector<int32_t>> prompts = {ids_of(ids[0]), ids_of(ids[1].narrow(0, 0, 11))};
  SamplingConfig greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 24;
  const Generation cached = generate(model, prompts, greedy, {}, 0);
  const Generation full = generate_uncached(model, prompts, greedy, {}, 0);
  EXPECT_TRUE(torch::equal(cached.tokens, full.tokens)) << GetParam();
  EXPECT_LE((cached.logprobs - full.logprobs).abs().max().item<double>(), 1e-4);
  // Padding changes nothing: the padded row's logits equal its logits alone.
  torch::NoGradGuard no_grad;
  const PromptBatch batch = left_pad_prompts(prompts, 1000, 0, torch::kCPU);
  const torch::Tensor padded = model->forward(batch.ids, batch.mask).select(0, 1).narrow(0, 9, 11);
  const torch::Tensor alone = model->forward(ids[1].narrow(0, 0, 11).unsqueeze(0))[0];
  EXPECT_LE((padded - alone).abs().max().item<double>(), 1e-4);
}

TEST_P(Family, WrittenFolderLoadsWithTheSameLogits) {
  const std::string dir = fixture_dir(GetParam());
  GPT model = load_hf(dir);
  test::TempDir out(std::string("hf-") + GetParam());
  CheckpointWrite w;
  w.weights = model_weights(*model);
  w.hf_config = gpt_config_to_hf(model->config());
  save_checkpoint(out.file("model"), w);
  // RLHF_HF_WRITE_DIR=DIR keeps a copy for tools/make_hf_fixtures.py --check DIR/FAMILY FAMILY.
  if (const char* keep = std::getenv("RLHF_HF_WRITE_DIR")) save_checkpoint(join_path(keep, GetParam()), w);
  // The names and layouts are transformers' (tools/make_hf_fixtures.py
  // --check loads the folder in transformers itself).
  const TensorMap on_disk = load_safetensors(out.file("model/model.safetensors")).tensors;
  const TensorMap original = load_safetensors(join_path(dir, "model.safetensors")).tensors;
  for (const auto& [name, t] : original) {
    ASSERT_TRUE(on_disk.count(name)) << name;
    EXPECT_EQ(on_disk.at(name).sizes(), t.sizes()) << name;
  }
  GPT again = load_hf(out.file("model"));
  const torch::Tensor ids = load_safetensors(join_path(dir, "expected.safetensors")).tensors.at("input_ids");
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(model->forward(ids), again->forward(ids)));
  // num_parameters counts what costs FLOPs: all but the position and token
  // embeddings, the head once.
  const GPTConfig& c = again->config();
  int64_t counted = 0;
  for (const auto& [name, p] : named_parameters(*again)) {
    const bool embedding = name == "transformer.wpe.weight" || (name == "transformer.wte.weight" && !c.tie_word_embeddings);
    if (!embedding) counted += p.numel();
  }
  EXPECT_EQ(c.num_parameters(), counted);
}

INSTANTIATE_TEST_SUITE_P(HfFixtures, Family, testing::ValuesIn(kFamilies));

// LoRA on the Llama family's projections: merged equals adapted, and the
// adapter keys are PEFT's for that family (nn.Linear, so no fan_in_fan_out).
TEST(LlamaLora, MergedEqualsAdaptedAndKeysArePefts) {
  GPT model = load_hf(fixture_dir("qwen2"));
  LoraConfig lc;
  lc.enabled = true;
  lc.rank = 4;
  lc.targets = {"q_proj", "v_proj", "down_proj"};
  LoraAdapters lora(model, lc, 3);
  const torch::Tensor ids = torch::randint(4, 300, {2, 16});
  torch::NoGradGuard no_grad;
  const torch::Tensor before = model->forward(ids);
  for (auto& p : lora.parameters()) p.tensor.normal_(0, 0.05);
  const torch::Tensor adapted = model->forward(ids);
  EXPECT_FALSE(torch::allclose(adapted, before, 1e-4, 1e-4));
  GPT merged(model->config());
  load_weights(*merged, lora.merged_weights(), "merged");
  EXPECT_TRUE(torch::allclose(merged->forward(ids), adapted, 1e-4, 1e-4));
  const TensorMap peft = lora.peft_state();
  ASSERT_TRUE(peft.count("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"));
  EXPECT_EQ(peft.at("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").sizes(),
            (std::vector<int64_t>{64, 4}));
  EXPECT_EQ(lora.peft_config()["fan_in_fan_out"], false);
  lc.targets = {"c_attn"};
  EXPECT_NE(test::error_of([&] { GPT m = load_hf(fixture_dir("qwen2")); LoraAdapters x(m, lc, 1); }).find("q_proj"),
            std::string::npos);
}

Json config_of(const std::string& family) { return read_json_file(join_path(fixture_dir(family), "config.json")); }

TEST(HfConfig, WhatWeDoNotImplementIsAnErrorNamingTheKey) {
  auto error = [](Json hf) {
    return test::error_of([&] { gpt_config_from_hf(hf, "config.json"); });
  };
  Json unknown = config_of("llama2");
  unknown["model_type"] = "falcon";
  EXPECT_NE(error(unknown).find("model_type \"falcon\""), std::string::npos);
  Json yarn = config_of("llama3");
  yarn["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(error(yarn).find("rope_scaling.rope_type \"yarn\""), std::string::npos);
  Json gelu = config_of("qwen2");
  gelu["hidden_act"] = "gelu";
  EXPECT_NE(error(gelu).find("hidden_act"), std::string::npos);
  Json window = config_of("qwen2");
  window["use_sliding_window"] = true;
  EXPECT_NE(error(window).find("use_sliding_window"), std::string::npos);
  Json heads = config_of("llama3");
  heads["num_key_value_heads"] = 3;
  EXPECT_NE(error(heads).find("n_kv_head"), std::string::npos);
  Json gpt2 = config_of("gpt2_untied");
  gpt2["scale_attn_by_inverse_layer_idx"] = true;
  EXPECT_NE(error(gpt2).find("scale_attn_by_inverse_layer_idx"), std::string::npos);
}

TEST(HfConfig, MistralPastItsSlidingWindowIsRefused) {
  Json hf = config_of("mistral");
  hf["sliding_window"] = 8;
  GPT model(gpt_config_from_hf(hf, "config.json"));
  torch::NoGradGuard no_grad;
  EXPECT_NO_THROW(model->forward(torch::ones({1, 8}, torch::kLong)));
  EXPECT_NE(test::error_of([&] { model->forward(torch::ones({1, 9}, torch::kLong)); }).find("sliding window"),
            std::string::npos);
}

TEST(HfConfig, LlamaFamilyRoundTripsThroughConfigJson) {
  for (const char* family : {"llama3", "llama2", "mistral", "qwen2", "qwen3", "smollm2"}) {
    const GPTConfig c = gpt_config_from_hf(config_of(family), family);
    const GPTConfig back = gpt_config_from_hf(gpt_config_to_hf(c), family);
    EXPECT_EQ(config_to_json(back), config_to_json(c)) << family;
  }
}

}  // namespace
}  // namespace rlhf

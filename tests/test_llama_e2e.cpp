// The pipeline on the CI config with a Llama-family model (Qwen2-style:
// grouped-query attention, q/k/v biases, an untied head): pretraining writes
// a random-weight Hugging Face folder and trains it, then SFT, reward model
// and PPO start from it. Every folder is in transformers' layout; with
// RLHF_HF_WRITE_DIR=DIR the run is kept there with our logits beside the PPO
// policy, for `tools/make_hf_fixtures.py --check-ours DIR/ppo/checkpoints/best`.
#include <gtest/gtest.h>

#include "common/fs.h"
#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "tests/process_util.h"
#include "tests/test_util.h"
#include "train/safetensors.h"

namespace rlhf {
namespace {

TEST(LlamaPipeline, SftRewardModelAndPpoFromALlamaFamilyFolder) {
  test::TempDir dir("llama-pipeline");
  const char* keep = std::getenv("RLHF_HF_WRITE_DIR");
  const std::string out = keep ? join_path(keep, "pipeline") : dir.file("run");
  if (keep) remove_all(out);
  const std::vector<std::string> args = {
      "pipeline", "--config", "configs/ci.toml", "--out_dir=" + out, "--pretrain.model.arch=llama",
      "--pretrain.model.model_type=qwen2", "--pretrain.model.qkv_bias=true", "--pretrain.model.n_kv_head=1",
      "--pretrain.model.intermediate_size=128", "--pretrain.model.tie_word_embeddings=false",
      // Qwen2.5's chat template (ChatML), its markers added to our tokenizer.
      "--sft.chat_template=tests/fixtures/chat_templates/qwen2.jinja",
      "--sft.chat_special_tokens=<|im_start|>,<|im_end|>"};
  ASSERT_EQ(test::run_cli(args, dir.file("run.log"), "", test::source_dir()), 0) << read_file(dir.file("run.log"));

  for (const char* stage : {"pretrain", "sft", "ppo"}) {
    const std::string ckpt = resolve_checkpoint(join_path(out, stage), /*prefer_best=*/true);
    const Json config = read_json_file(join_path(ckpt, "config.json"));
    EXPECT_EQ(config["model_type"], "qwen2") << stage;
    EXPECT_EQ(config["architectures"][0], "Qwen2ForCausalLM") << stage;
    const TensorMap on_disk = load_safetensors(join_path(ckpt, "model.safetensors")).tensors;
    EXPECT_TRUE(on_disk.count("model.layers.0.self_attn.q_proj.bias")) << stage;
    EXPECT_TRUE(on_disk.count("lm_head.weight")) << stage;
    EXPECT_FALSE(on_disk.count("transformer.wte.weight")) << stage;
  }
  const std::string rm = resolve_checkpoint(join_path(out, "rm"), /*prefer_best=*/true);
  EXPECT_EQ(read_json_file(join_path(rm, "config.json"))["architectures"][0], "Qwen2ForSequenceClassification");
  EXPECT_TRUE(load_safetensors(join_path(rm, "model.safetensors")).tensors.count("score.weight"));

  LoadedPolicy ppo = load_policy(join_path(out, "ppo"));
  EXPECT_TRUE(ppo.model->config().is_llama());
  // The template travels from SFT to the PPO policy, and replies end at <|im_end|>.
  EXPECT_EQ(ppo.tokenizer.config().chat_template,
            read_file(test::source_dir() + "/tests/fixtures/chat_templates/qwen2.jinja"));
  const ChatTemplate chat(ppo.tokenizer);
  EXPECT_EQ(chat.end_of_turn(), ppo.tokenizer.find_special("<|im_end|>"));
  const Json generation = read_json_file(join_path(ppo.dir, "generation_config.json"));
  EXPECT_NE(generation["eos_token_id"].dump().find(std::to_string(chat.end_of_turn())), std::string::npos);
  const std::vector<int32_t> prompt = chat.render_prompt({{"user", "Where is my order?"}});
  EXPECT_EQ(ppo.tokenizer.decode(prompt).rfind("<|im_start|>system\nYou are Qwen, created by Alibaba", 0), 0u);
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::arange(3, 40, torch::kLong).unsqueeze(0);
  const torch::Tensor logits = ppo.model->forward(ids);
  EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
  if (keep) {
    save_safetensors(join_path(ppo.dir, "ours.safetensors"), {{"input_ids", ids}, {"logits", logits.contiguous()}});
    write_file_atomic(join_path(ppo.dir, "ours_prompt.json"),
                      Json{{"conversation", {{{"role", "user"}, {"content", "Where is my order?"}}}}, {"ids", prompt}}.dump());
  }
}

}  // namespace
}  // namespace rlhf

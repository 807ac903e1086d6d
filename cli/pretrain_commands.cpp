// rlhf pretrain | sample | config
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "common/config.h"
#include "common/error.h"
#include "common/log.h"
#include "policy/checkpoint.h"
#include "policy/generate.h"
#include "labels/feedback.h"
#include "policy/sft.h"
#include "reward/rm_train.h"
#include "rollout/pipeline.h"
#include "rollout/grpo.h"
#include "rollout/ppo.h"
#include "dpo/dpo.h"
#include "pretrain/pretrain.h"
#include "support/generator.h"
#include "train/distributed.h"
#include "train/runtime.h"

namespace rlhf::cli {

void register_pretrain_commands(CLI::App& app) {
  {
    auto args = std::make_shared<StageArgs>();
    CLI::App* sub = app.add_subcommand("pretrain", "Pretrain a GPT model on a text corpus (next-token prediction)");
    sub->add_option("--config", args->config, "TOML config (see configs/); defaults when omitted");
    sub->allow_extras();
    sub->footer("Overrides: --section.key=value, e.g. --train.max_steps=200 --model.n_layer=4");
    add_action(sub, [args, sub] {
      auto cfg = load_config<PretrainConfig>(args->config, args->overrides(sub));
      const DistInfo dist = init_distributed();
      PretrainResult r = run_pretrain(cfg, dist);
      if (!dist.is_main()) return;
      std::printf("\nfinal validation loss %.4f (perplexity %.1f)\ncheckpoint: %s\n\n", r.final_val_loss,
                  std::exp(r.final_val_loss), r.checkpoint.c_str());
      for (const auto& s : r.samples) std::printf("--- sample ---\n%s\n\n", s.c_str());
    });
  }
  {
    struct SampleArgs {
      std::string checkpoint;
      std::vector<std::string> prompts;
      SamplingConfig sampling;
      int num_samples = 1;
      int threads = 0;
    };
    auto args = std::make_shared<SampleArgs>();
    args->sampling.temperature = 0.8;
    args->sampling.top_k = 40;
    args->sampling.max_new_tokens = 64;
    CLI::App* sub = app.add_subcommand("sample", "Print continuations of prompts from a checkpoint");
    sub->add_option("--checkpoint", args->checkpoint, "checkpoint folder or run folder")->required();
    sub->add_option("--prompt", args->prompts, "prompt text (repeatable)")->required();
    sub->add_option("--num-samples", args->num_samples, "continuations per prompt")->capture_default_str();
    sub->add_option("--max-new-tokens", args->sampling.max_new_tokens)->capture_default_str();
    sub->add_option("--temperature", args->sampling.temperature, "0 = greedy")->capture_default_str();
    sub->add_option("--top-k", args->sampling.top_k, "0 = off")->capture_default_str();
    sub->add_option("--top-p", args->sampling.top_p, "1 = off")->capture_default_str();
    sub->add_option("--seed", args->sampling.seed)->capture_default_str();
    add_weights_option(sub, args->sampling.weights);
    sub->add_option("--threads", args->threads, "0 = all CPUs")->capture_default_str();
    add_action(sub, [args] {
      set_torch_threads(args->threads);
      LoadedPolicy p = load_policy(args->checkpoint);
      std::vector<std::vector<int32_t>> prompts;
      std::vector<std::string> texts;
      for (const auto& text : args->prompts) {
        for (int i = 0; i < args->num_samples; ++i) {
          prompts.push_back(p.tokenizer.encode(text));
          texts.push_back(text);
        }
      }
      const int32_t eot = p.tokenizer.special_id(special::kEndOfText);
      Generation g = generate(p.model, prompts, args->sampling, {eot}, eot);
      for (size_t i = 0; i < prompts.size(); ++i) {
        std::vector<int32_t> ids;
        for (int64_t j = 0; j < g.lengths[i].item<int64_t>(); ++j) {
          ids.push_back(static_cast<int32_t>(g.tokens[i][j].item<int64_t>()));
        }
        std::printf("--- sample %zu ---\n%s%s\n\n", i + 1, texts[i].c_str(), p.tokenizer.decode(ids, true).c_str());
      }
    });
  }
  {
    auto stage = std::make_shared<std::string>();
    CLI::App* sub = app.add_subcommand("config", "Print a stage's default config as TOML (all keys, with defaults)");
    // Each stage's defaults, by the name its command has.
    static const std::vector<std::pair<std::string, std::function<Json()>>> kStages = {
        {"pretrain", [] { return config_to_json(PretrainConfig()); }},
        {"sft", [] { return config_to_json(SftConfig()); }},
        {"rm", [] { return config_to_json(RewardTrainConfig()); }},
        {"ppo", [] { return config_to_json(PpoConfig()); }},
        {"dpo", [] { return config_to_json(DpoConfig()); }},
        {"grpo", [] { return config_to_json(GrpoConfig()); }},
        {"rloo", [] { return config_to_json(rloo_defaults()); }},
        {"candidates", [] { return config_to_json(labels::CandidatesConfig()); }},
        {"pipeline", [] { return config_to_json(PipelineConfig()); }},
        {"support-data", [] { return config_to_json(support::GeneratorConfig()); }},
    };
    std::string names;
    for (const auto& [name, f] : kStages) names += (names.empty() ? "" : ", ") + name;
    sub->add_option("stage", *stage, names)->required();
    add_action(sub, [stage, names] {
      for (const auto& [name, defaults] : kStages) {
        if (name == *stage) {
          std::cout << json_to_toml(defaults());
          return;
        }
      }
      fail(ErrorKind::kUsage, "unknown stage '", *stage, "'; known: ", names);
    });
  }
}

}  // namespace rlhf::cli

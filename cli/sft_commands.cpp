// rlhf sft | chat | generate
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "policy/generate.h"
#include "policy/sft.h"
#include "train/distributed.h"
#include "train/runtime.h"

namespace rlhf::cli {
namespace {

struct PolicyArgs {
  std::string checkpoint;
  std::string system;  // empty: the one the checkpoint was fine-tuned with
  SamplingConfig sampling;
  int threads = 0;
};

void add_sampling_options(CLI::App* sub, PolicyArgs& a) {
  sub->add_option("--checkpoint", a.checkpoint, "checkpoint folder or run folder (its best checkpoint)")->required();
  sub->add_option("--system", a.system, "system prompt (default: the one used in fine-tuning)");
  sub->add_option("--temperature", a.sampling.temperature, "0 = greedy")->capture_default_str();
  sub->add_option("--top-k", a.sampling.top_k, "0 = off")->capture_default_str();
  sub->add_option("--top-p", a.sampling.top_p, "1 = off")->capture_default_str();
  sub->add_option("--max-new-tokens", a.sampling.max_new_tokens)->capture_default_str();
  sub->add_option("--seed", a.sampling.seed)->capture_default_str();
  add_weights_option(sub, a.sampling.weights);
  sub->add_option("--threads", a.threads, "0 = all CPUs")->capture_default_str();
}

struct ChatPolicy {
  LoadedPolicy policy;
  std::unique_ptr<ChatTemplate> chat;
  std::string system;
};

ChatPolicy open_chat_policy(const PolicyArgs& a) {
  set_torch_threads(a.threads);
  ChatPolicy p;
  p.policy = load_chat_policy(a.checkpoint);
  p.chat = std::make_unique<ChatTemplate>(p.policy.tokenizer);
  p.system = !a.system.empty() ? a.system : p.policy.trainer_state.value("system_prompt", "");
  return p;
}

void run_chat(const PolicyArgs& a) {
  ChatPolicy p = open_chat_policy(a);
  const bool tty = ::isatty(STDIN_FILENO);
  std::printf("Chatting with %s. Commands: /reset (new conversation), /quit.\n", p.policy.dir.c_str());
  Conversation conv;
  if (!p.system.empty()) conv.push_back({"system", p.system});
  const size_t base = conv.size();
  std::string line;
  uint64_t turn = 0;
  for (;;) {
    std::printf("\nyou> ");
    std::fflush(stdout);
    if (!std::getline(std::cin, line)) {
      std::printf("\n");
      break;  // end of input
    }
    if (!tty) std::printf("%s\n", line.c_str());
    if (line == "/quit" || line == "/exit") break;
    if (line == "/reset") {
      conv.resize(base);
      std::printf("(new conversation)\n");
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    conv.push_back({"user", line});
    std::printf("agent> ");
    std::fflush(stdout);
    std::vector<int32_t> reply;
    bool open = true;
    const auto stops = p.chat->stop_tokens();
    SamplingConfig sc = a.sampling;
    sc.seed = static_cast<int64_t>(mix_seed({static_cast<uint64_t>(a.sampling.seed), turn++}));
    generate(p.policy.model, {p.chat->render_prompt(conv)}, sc, stops, p.chat->pad_id(), {},
             [&](const torch::Tensor& tokens, const torch::Tensor& running) {
               if (!open || !running[0].item<bool>()) return;
               const auto id = static_cast<int32_t>(tokens[0].item<int64_t>());
               if (std::find(stops.begin(), stops.end(), id) != stops.end()) {
                 open = false;
                 return;
               }
               reply.push_back(id);
               const std::string piece = p.policy.tokenizer.decode_token(id);
               std::fwrite(piece.data(), 1, piece.size(), stdout);
               std::fflush(stdout);
             });
    std::printf("\n");
    conv.push_back({"assistant", p.chat->decode_reply(reply)});
  }
}

void run_generate(const PolicyArgs& a, const std::string& prompts_path, const std::string& out_path, int batch_size,
                  int num_samples) {
  ChatPolicy p = open_chat_policy(a);
  struct Item {
    Json source;
    Conversation conv;
  };
  std::vector<Item> items;
  read_jsonl(prompts_path, [&](const Json& obj, size_t line) {
    items.push_back({obj, prompt_from_json(obj, prompts_path, line, p.system)});
  });
  if (items.empty()) fail(ErrorKind::kData, prompts_path, ": no prompts");
  JsonlWriter out(out_path, /*append=*/false);
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  const size_t total = items.size() * static_cast<size_t>(std::max(1, num_samples));
  size_t done = 0;
  for (size_t i = 0; i < items.size(); i += static_cast<size_t>(batch_size)) {
    std::vector<std::vector<int32_t>> prompts;
    std::vector<uint64_t> seeds;
    std::vector<size_t> which;
    for (size_t j = i; j < std::min(items.size(), i + batch_size); ++j) {
      for (int s = 0; s < std::max(1, num_samples); ++s) {
        prompts.push_back(p.chat->render_prompt(items[j].conv));
        seeds.push_back(mix_seed({static_cast<uint64_t>(a.sampling.seed), j, static_cast<uint64_t>(s)}));
        which.push_back(j);
      }
    }
    Generation g = generate(p.policy.model, prompts, a.sampling, p.chat->stop_tokens(), p.chat->pad_id(), seeds);
    const std::vector<ChatReply> replies = decode_replies(*p.chat, g.tokens, g.lengths, g.finished);
    for (size_t r = 0; r < prompts.size(); ++r) {
      tokens += replies[r].tokens;
      Json row = {{"prompt", conversation_to_json(items[which[r]].conv)},
                  {"response", replies[r].text},
                  {"finished", replies[r].finished},
                  {"tokens", replies[r].tokens}};
      if (items[which[r]].source.contains("metadata")) row["metadata"] = items[which[r]].source["metadata"];
      out.write(row);
    }
    done += prompts.size();
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int width = 30, filled = static_cast<int>(width * done / total);
    std::fprintf(stderr, "\r[%s%s] %zu/%zu replies | %s tok/s | ETA %s   ", std::string(filled, '#').c_str(),
                 std::string(width - filled, ' ').c_str(), done, total, format_count(tokens / secs).c_str(),
                 format_duration(secs / done * (total - done)).c_str());
    std::fflush(stderr);
  }
  std::fprintf(stderr, "\nwrote %zu replies to %s\n", done, out_path.c_str());
}

}  // namespace

void register_sft_commands(CLI::App& app) {
  {
    auto args = std::make_shared<StageArgs>();
    CLI::App* sub = app.add_subcommand("sft", "Supervised fine-tuning on conversations (assistant-only loss; freezing or LoRA)");
    sub->add_option("--config", args->config, "TOML config (see configs/sft.toml)");
    sub->allow_extras();
    sub->footer("Overrides: --section.key=value, e.g. --lora.enabled=true --train.epochs=1");
    add_action(sub, [args, sub] {
      auto cfg = load_config<SftConfig>(args->config, args->overrides(sub));
      const DistInfo dist = init_distributed();
      SftResult r = run_sft(cfg, dist);
      if (!dist.is_main()) return;
      std::printf("\nbest validation loss %.4f\nbest checkpoint: %s\n\n", r.best_val_loss, r.best_checkpoint.c_str());
      for (const auto& s : r.samples) std::printf("%s\n\n", s.c_str());
    });
  }
  {
    auto args = std::make_shared<PolicyArgs>();
    args->sampling.temperature = 0.7;
    args->sampling.top_p = 0.9;
    args->sampling.max_new_tokens = 128;
    CLI::App* sub = app.add_subcommand("chat", "Chat with a checkpoint in the terminal (streams replies; /reset, /quit)");
    add_sampling_options(sub, *args);
    add_action(sub, [args] { run_chat(*args); });
  }
  {
    auto args = std::make_shared<PolicyArgs>();
    auto prompts = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto batch = std::make_shared<int>(16);
    auto samples = std::make_shared<int>(1);
    args->sampling.temperature = 0.7;
    args->sampling.max_new_tokens = 128;
    CLI::App* sub = app.add_subcommand("generate", "Batch replies for a JSONL file of prompts");
    add_sampling_options(sub, *args);
    sub->add_option("--prompts", *prompts, "JSONL: {\"prompt\": text or messages} or {\"messages\"}")->required();
    sub->add_option("--out", *out, "output JSONL: prompt, response, finished, tokens")->required();
    sub->add_option("--batch-size", *batch, "prompts per batch")->capture_default_str();
    sub->add_option("--num-samples", *samples, "replies per prompt")->capture_default_str();
    add_action(sub, [=] { run_generate(*args, *prompts, *out, *batch, *samples); });
  }
}

}  // namespace rlhf::cli

// End-to-end runs of `rlhf sft`, `rlhf chat` and `rlhf generate` on a tiny
// model: a killed fine-tuning run resumes exactly; chat handles its commands
// and end of input; generate writes one reply per prompt.
#include <gtest/gtest.h>

#include <chrono>
#include <sstream>
#include <thread>

#include "common/config.h"
#include "common/fs.h"
#include "policy/checkpoint.h"
#include "process_util.h"
#include "test_util.h"
#include "tiny_fixtures.h"

namespace rlhf {
namespace {

struct E2E {
  test::TempDir dir{"sft-e2e"};
  E2E() {
    auto data = test::tiny_support_data(64, 16, 4);
    write_file_atomic(dir.file("train.jsonl"), support::to_jsonl(data.train));
    write_file_atomic(dir.file("val.jsonl"), support::to_jsonl(data.val));
    write_file_atomic(dir.file("held.jsonl"), support::to_jsonl(data.heldout));
    test::write_tiny_checkpoint(dir.file("base"), test::tiny_support_tokenizer(data));
  }
  std::vector<std::string> sft_args(const std::string& out) const {
    return {"sft", "--out_dir=" + out, "--init_from=" + dir.file("base"), "--data.train_file=" + dir.file("train.jsonl"),
            "--data.val_file=" + dir.file("val.jsonl"), "--train.batch_size=8", "--train.max_steps=10",
            "--train.checkpoint_interval=3", "--train.eval_interval=5", "--train.threads=2",
            "--schedule.warmup_steps=2", "--sample.count=0"};
  }
};


TEST(SftE2E, KilledRunResumesExactlyAndChatAndGenerateWork) {
  E2E e;
  ASSERT_EQ(test::run_cli(e.sft_args(e.dir.file("straight")), e.dir.file("straight.log")), 0)
      << read_file(e.dir.file("straight.log"));

  const pid_t pid = test::spawn_cli(e.sft_args(e.dir.file("killed")), e.dir.file("killed.log"));
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!path_exists(e.dir.file("killed/checkpoints/latest")) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  ASSERT_EQ(test::wait_exit(pid), 128 + SIGKILL) << "the run finished before it could be killed";
  ASSERT_EQ(test::run_cli(e.sft_args(e.dir.file("killed")), e.dir.file("resumed.log")), 0)
      << read_file(e.dir.file("resumed.log"));
  EXPECT_EQ(test::file_lines(e.dir.file("killed/metrics.jsonl")), test::file_lines(e.dir.file("straight/metrics.jsonl")));
  const std::string a = resolve_checkpoint(e.dir.file("straight")), b = resolve_checkpoint(e.dir.file("killed"));
  EXPECT_EQ(read_file(a + "/model.safetensors"), read_file(b + "/model.safetensors"));
  EXPECT_TRUE(path_exists(e.dir.file("straight/checkpoints/best")));

  // Chat: two turns, a reset, then end of input (no /quit).
  write_file_atomic(e.dir.file("chat.in"), "Where is order #12345?\n/reset\nI need an invoice.\n");
  ASSERT_EQ(test::run_cli({"chat", "--checkpoint", e.dir.file("straight"), "--max-new-tokens", "6", "--threads", "2"},
                          e.dir.file("chat.log"), e.dir.file("chat.in")),
            0)
      << read_file(e.dir.file("chat.log"));
  const std::string chat = read_file(e.dir.file("chat.log"));
  size_t agents = 0;
  for (size_t p = chat.find("agent> "); p != std::string::npos; p = chat.find("agent> ", p + 1)) ++agents;
  EXPECT_EQ(agents, 2u) << chat;
  EXPECT_NE(chat.find("(new conversation)"), std::string::npos) << chat;
  write_file_atomic(e.dir.file("quit.in"), "/quit\nthis is never read\n");
  EXPECT_EQ(test::run_cli({"chat", "--checkpoint", e.dir.file("straight")}, e.dir.file("quit.log"), e.dir.file("quit.in")), 0);
  EXPECT_EQ(read_file(e.dir.file("quit.log")).find("agent> "), std::string::npos);

  // Generate: one JSON line per prompt.
  ASSERT_EQ(test::run_cli({"generate", "--checkpoint", e.dir.file("straight"), "--prompts", e.dir.file("held.jsonl"),
                           "--out", e.dir.file("out.jsonl"), "--max-new-tokens", "8", "--batch-size", "3"},
                          e.dir.file("gen.log")),
            0)
      << read_file(e.dir.file("gen.log"));
  const auto out = test::file_lines(e.dir.file("out.jsonl"));
  ASSERT_EQ(out.size(), 4u);
  for (const auto& l : out) {
    const Json row = Json::parse(l);
    EXPECT_TRUE(row.contains("response"));
    EXPECT_TRUE(row.contains("metadata"));
    EXPECT_LE(row["tokens"].get<int>(), 8);
  }
}

}  // namespace
}  // namespace rlhf

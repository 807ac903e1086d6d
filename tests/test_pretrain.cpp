// The pretraining stage: corpus errors, data order, and a run killed at a
// checkpoint that resumes to exactly the uninterrupted result.
#include <gtest/gtest.h>
#include <fcntl.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/config.h"
#include "common/fs.h"
#include "policy/checkpoint.h"
#include "pretrain/corpus.h"
#include "pretrain/pretrain.h"
#include "pretrain/token_data.h"
#include "process_util.h"
#include "test_util.h"

namespace rlhf {
namespace {

using test::error_of;

TEST(Corpus, MissingEmptyAndMalformedInputsAreClearErrors) {
  test::TempDir dir("corpus");
  std::string msg = error_of([&] { read_corpus({dir.file("nope")}, {".txt"}); });
  EXPECT_NE(msg.find(dir.file("nope")), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  make_dirs(dir.file("empty"));
  write_file_atomic(dir.file("empty/a.txt"), "");
  msg = error_of([&] { read_corpus({dir.file("empty")}, {".txt"}); });
  EXPECT_NE(msg.find("no text"), std::string::npos) << msg;
  write_file_atomic(dir.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n");
  msg = error_of([&] { read_corpus({dir.file("bad.jsonl")}, {}); });
  EXPECT_NE(msg.find("bad.jsonl:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"text\""), std::string::npos) << msg;
  write_file_atomic(dir.file("worse.jsonl"), "{\"text\": \"ok\"}\nnot json\n");
  msg = error_of([&] { read_corpus({dir.file("worse.jsonl")}, {}); });
  EXPECT_NE(msg.find("worse.jsonl:2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  // A good mix: a folder of .txt plus a .jsonl file.
  make_dirs(dir.file("docs"));
  write_file_atomic(dir.file("docs/one.txt"), "first document");
  write_file_atomic(dir.file("docs/two.txt"), "second document");
  write_file_atomic(dir.file("c.jsonl"), "{\"text\": \"third\"}\n\n{\"text\": \"fourth\"}\n");
  Corpus c = read_corpus({dir.file("docs"), dir.file("c.jsonl")}, {".txt"});
  EXPECT_EQ(c.documents, (std::vector<std::string>{"first document", "second document", "third", "fourth"}));
}

TEST(TokenData, EachEpochVisitsEveryWindowOnceInASeededOrder) {
  WindowSampler a(10000, 64, 42), b(10000, 64, 42), c(10000, 64, 43);
  const int64_t w = a.windows_per_epoch();
  ASSERT_EQ(w, (10000 - 64) / 64);
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::set<int64_t> starts;
    for (int64_t k = epoch * w; k < (epoch + 1) * w; ++k) {
      const int64_t s = a.start(k);
      EXPECT_EQ(s, b.start(k));
      EXPECT_GE(s, 0);
      EXPECT_LE(s + 65, 10000);
      starts.insert(s);
    }
    EXPECT_EQ(static_cast<int64_t>(starts.size()), w) << "epoch " << epoch << " repeats a window";
  }
  int differ = 0;
  for (int64_t k = 0; k < 20; ++k) differ += a.start(k) != c.start(k);
  EXPECT_GT(differ, 10);
}

TEST(PretrainConfig, BadKeysAreErrorsNamingTheKey) {
  std::string msg = error_of([] { load_config<PretrainConfig>("", {"--train.batchsize=4"}); });
  EXPECT_NE(msg.find("train.batchsize"), std::string::npos) << msg;
  msg = error_of([] { load_config<PretrainConfig>("", {"--model.n_layer=two"}); });
  EXPECT_NE(msg.find("model.n_layer"), std::string::npos) << msg;
}

// A small corpus of varied English-like sentences.
void write_corpus(const std::string& dir) {
  make_dirs(dir);
  const char* words[] = {"the", "people", "congress", "nation", "will", "work", "for", "peace", "and",
                         "freedom", "of", "our", "great", "country", "today", "we", "must", "act"};
  uint64_t x = 7;
  for (int f = 0; f < 6; ++f) {
    std::string text;
    for (int i = 0; i < 3000; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      text += words[(x >> 33) % 18];
      text += (i % 12 == 11) ? ". " : " ";
    }
    write_file_atomic(dir + "/doc" + std::to_string(f) + ".txt", text);
  }
}

// max_steps: the resume test runs longer, so that the run it kills at its
// first checkpoint cannot finish first (a tiny step takes milliseconds).
std::vector<std::string> tiny_run_args(const std::string& corpus, const std::string& out, int max_steps = 12) {
  return {"pretrain", "--out_dir=" + out, "--data.corpus=" + corpus, "--data.vocab_size=300",
          "--model.n_layer=2", "--model.n_embd=32", "--model.n_head=2", "--model.n_positions=32",
          "--train.batch_size=4", "--train.max_steps=" + std::to_string(max_steps), "--train.checkpoint_interval=4",
          "--train.eval_interval=6", "--train.eval_batches=2", "--train.threads=2",
          "--schedule.warmup_steps=2", "--sample.prompts="};
}

std::vector<std::string> metric_lines(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(read_file(path));
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

TEST(PretrainE2E, KilledRunResumesToExactlyTheUninterruptedResult) {
  test::TempDir dir("resume");
  write_corpus(dir.file("corpus"));
  ASSERT_EQ(test::run_cli(tiny_run_args(dir.file("corpus"), dir.file("straight"), 60), dir.file("straight.log")), 0)
      << read_file(dir.file("straight.log"));

  // Start the same run, kill it with SIGKILL once a checkpoint exists.
  const pid_t pid = test::spawn_cli(tiny_run_args(dir.file("corpus"), dir.file("killed"), 60), dir.file("killed.log"));
  ASSERT_GT(pid, 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!path_exists(dir.file("killed/checkpoints/latest")) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::kill(pid, SIGKILL);
  const int status = test::wait_exit(pid);
  ASSERT_EQ(status, 128 + SIGKILL) << "the run finished before it could be killed";
  const std::string killed_at = read_file(dir.file("killed/checkpoints/latest"));
  EXPECT_NE(killed_at.find("step-"), std::string::npos);

  ASSERT_EQ(test::run_cli(tiny_run_args(dir.file("corpus"), dir.file("killed"), 60), dir.file("resumed.log")), 0)
      << read_file(dir.file("resumed.log"));
  EXPECT_NE(read_file(dir.file("resumed.log")).find("resuming from"), std::string::npos);

  // Same loss sequence, same final weights, bit for bit.
  EXPECT_EQ(metric_lines(dir.file("killed/metrics.jsonl")), metric_lines(dir.file("straight/metrics.jsonl")));
  const std::string a = resolve_checkpoint(dir.file("straight")), b = resolve_checkpoint(dir.file("killed"));
  EXPECT_EQ(read_file(a + "/model.safetensors"), read_file(b + "/model.safetensors"));
  EXPECT_EQ(read_file(a + "/optimizer.safetensors"), read_file(b + "/optimizer.safetensors"));
}

// Pretraining can continue a checkpoint (init_from), ours or a Hugging Face
// GPT-2 folder: its config and tokenizer are used, its weights are the start.
TEST(PretrainE2E, InitFromContinuesACheckpoint) {
  test::TempDir dir("initfrom");
  write_corpus(dir.file("corpus"));
  ASSERT_EQ(test::run_cli(tiny_run_args(dir.file("corpus"), dir.file("first")), dir.file("first.log")), 0)
      << read_file(dir.file("first.log"));
  const std::string first = resolve_checkpoint(dir.file("first"));
  // Zero learning rate: the continued run's weights are the checkpoint's.
  const std::vector<std::string> args = {"pretrain", "--out_dir=" + dir.file("second"), "--init_from=" + first,
                                         "--data.corpus=" + dir.file("corpus"), "--train.batch_size=4",
                                         "--train.max_steps=2", "--train.eval_interval=2", "--train.eval_batches=1",
                                         "--schedule.lr=0", "--schedule.min_lr=0", "--schedule.warmup_steps=0",
                                         "--sample.prompts="};
  ASSERT_EQ(test::run_cli(args, dir.file("second.log")), 0) << read_file(dir.file("second.log"));
  EXPECT_NE(read_file(dir.file("second.log")).find("starting from"), std::string::npos);
  const TensorMap a = load_safetensors(first + "/model.safetensors").tensors;
  const TensorMap b = load_safetensors(resolve_checkpoint(dir.file("second")) + "/model.safetensors").tensors;
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  // A [model] setting beside init_from is refused, naming both.
  std::vector<std::string> clash = args;
  clash.push_back("--model.n_layer=3");
  EXPECT_NE(test::run_cli(clash, dir.file("clash.log")), 0);
  EXPECT_NE(read_file(dir.file("clash.log")).find("remove the [model] settings"), std::string::npos)
      << read_file(dir.file("clash.log"));
}

TEST(PretrainE2E, MissingCorpusExitsWithAClearError) {
  test::TempDir dir("nocorpus");
  auto args = tiny_run_args(dir.file("missing"), dir.file("out"));
  EXPECT_EQ(test::run_cli(args, dir.file("log")), 2);
  const std::string log = read_file(dir.file("log"));
  EXPECT_NE(log.find("missing"), std::string::npos) << log;
  EXPECT_NE(log.find("does not exist"), std::string::npos) << log;
}

}  // namespace
}  // namespace rlhf

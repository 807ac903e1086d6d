// Serving throughput and latency: `rlhf serve`'s HTTP server in this
// process, streaming clients over loopback. Prints aggregate tokens/s,
// time to first token and inter-token latency (p50/p99) at 1, 8 and 32
// concurrent clients, and the same requests served one at a time by an
// engine without batching (max_batch 1), all in one run.
//
//   build/bench/bench_serve [--checkpoint DIR] [--requests 64] [--max-tokens 64] [--threads 0]
//
// Without --checkpoint the model is random with the demo's shape (4 layers,
// 256 wide, 4,096 tokens, 256 context), so every reply runs to max-tokens.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <thread>

#include "common/fs.h"
#include "common/runtime.h"
#include "policy/checkpoint.h"
#include "serve/server.h"
#include "tests/loopback.h"
#include "tests/tiny_fixtures.h"
#include "train/runtime.h"

using namespace rlhf;
using Clock = std::chrono::steady_clock;

namespace {

struct Sample {
  double ttft = 0;
  std::vector<double> itl;
  int64_t tokens = 0;
  bool ok = false;
};

// One streamed chat completion over a fresh connection.
Sample stream_one(int port, int index, int max_tokens) {
  Sample s;
  const int fd = test::connect_loopback(port, 600);
  if (fd < 0) return s;
  std::string text = "Hi, my order #" + std::to_string(40000 + index) + " has not arrived.";
  for (int r = 0; r < index % 4; ++r) text += " I ordered it two weeks ago.";
  const Json body = {{"messages", {{{"role", "user"}, {"content", text}}}},
                     {"max_tokens", max_tokens},
                     {"temperature", 1.0},
                     {"seed", index},
                     {"stream", true},
                     {"stream_options", {{"include_usage", true}}}};
  const std::string b = body.dump();
  const std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          "Connection: close\r\nContent-Length: " + std::to_string(b.size()) + "\r\n\r\n" + b;
  const auto start = Clock::now();
  ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string all;
  char buf[65536];
  size_t scanned = 0;
  Clock::time_point last;
  bool first = true;
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    const auto now = Clock::now();
    all.append(buf, static_cast<size_t>(n));
    size_t at;
    while ((at = all.find("\"content\":", scanned)) != std::string::npos) {
      scanned = at + 10;
      if (all.compare(at + 10, 2, "\"\"") == 0) continue;  // the role-only first chunk
      if (first) {
        s.ttft = std::chrono::duration<double>(now - start).count();
        first = false;
      } else {
        s.itl.push_back(std::chrono::duration<double>(now - last).count());
      }
      last = now;
    }
  }
  ::close(fd);
  const size_t u = all.find("\"completion_tokens\":");
  if (u != std::string::npos) s.tokens = std::atoll(all.c_str() + u + 20);
  s.ok = all.find("data: [DONE]") != std::string::npos;
  return s;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5)];
}

struct LevelResult {
  double tokens_per_s = 0;
};

LevelResult run_level(const char* name, int port, int clients, int requests, int max_tokens) {
  std::vector<std::future<std::vector<Sample>>> workers;
  const auto start = Clock::now();
  for (int c = 0; c < clients; ++c) {
    workers.push_back(std::async(std::launch::async, [=] {
      std::vector<Sample> out;
      for (int i = c; i < requests; i += clients) out.push_back(stream_one(port, i, max_tokens));
      return out;
    }));
  }
  std::vector<double> ttft, itl;
  int64_t tokens = 0;
  int failed = 0;
  for (auto& w : workers) {
    for (const Sample& s : w.get()) {
      failed += !s.ok;
      tokens += s.tokens;
      ttft.push_back(s.ttft);
      itl.insert(itl.end(), s.itl.begin(), s.itl.end());
    }
  }
  const double wall = std::chrono::duration<double>(Clock::now() - start).count();
  LevelResult r{static_cast<double>(tokens) / wall};
  std::printf("%-34s %7d %9.0f %8.1f %9.0f %9.0f %8.1f %8.1f %6d\n", name, clients, r.tokens_per_s, wall,
              1000 * percentile(ttft, 0.5), 1000 * percentile(ttft, 0.99), 1000 * percentile(itl, 0.5),
              1000 * percentile(itl, 0.99), failed);
  std::fflush(stdout);
  return r;
}

// A random policy with the demo's shape and a tokenizer trained on the
// shipped support generator's conversations.
std::string random_demo_policy(const std::string& dir) {
  const Tokenizer tok = test::tiny_support_tokenizer(test::tiny_support_data(400, 10, 10), 4096);
  GPTConfig c = test::tiny_gpt_config(tok.vocab_size(), 256);
  c.n_embd = 256;
  c.n_layer = 4;
  c.n_head = 4;
  return test::write_random_checkpoint(dir, tok, c, 1);
}

}  // namespace

int main(int argc, char** argv) {
  ensure_process_environment(argc, argv);
  std::string checkpoint;
  int requests = 64, max_tokens = 64, threads = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--checkpoint")) checkpoint = argv[i + 1];
    else if (!std::strcmp(argv[i], "--requests")) requests = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--max-tokens")) max_tokens = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
  }
  const std::string scratch = "/tmp/rlhf-bench-serve-" + std::to_string(::getpid());
  if (checkpoint.empty()) checkpoint = random_demo_policy(join_path(scratch, "policy"));
  threads = set_torch_threads(threads);
  std::printf("bench_serve: %s, %d requests of up to %d tokens, %d LibTorch threads, %s\n", checkpoint.c_str(),
              requests, max_tokens, threads, process_environment_summary().c_str());
  std::printf("%-34s %7s %9s %8s %9s %9s %8s %8s %6s\n", "", "clients", "tok/s", "wall s", "TTFT p50", "TTFT p99",
              "ITL p50", "ITL p99", "failed");
  std::printf("%-34s %7s %9s %8s %9s %9s %8s %8s %6s\n", "", "", "", "", "ms", "ms", "ms", "ms", "");

  auto serve_with = [&](int max_batch) {
    serve::ServeConfig c;
    c.checkpoint = checkpoint;
    c.port = 0;
    c.threads = threads;
    c.engine.max_batch = max_batch;
    c.engine.max_queue = 1024;
    c.limits.default_max_tokens = max_tokens;
    return std::make_unique<serve::ChatServer>(c);
  };
  double alone = 0, best = 0;
  {
    auto server = serve_with(1);
    std::thread t([&] { server->run(); });
    stream_one(server->port(), 0, 4);  // warm-up
    alone = run_level("one at a time (max_batch 1)", server->port(), 1, requests, max_tokens).tokens_per_s;
    server->stop();
    t.join();
  }
  {
    auto server = serve_with(32);
    std::thread t([&] { server->run(); });
    stream_one(server->port(), 0, 4);
    for (int clients : {1, 8, 32}) {
      const std::string name = "continuous batching (max_batch 32)";
      const double tps = run_level(name.c_str(), server->port(), clients, requests, max_tokens).tokens_per_s;
      if (clients == 32) best = tps;
    }
    server->stop();
    t.join();
  }
  std::printf("32 clients vs one at a time: %.1fx aggregate tokens/s (target: at least 5x)\n", best / alone);
  remove_all(scratch);
  return 0;
}

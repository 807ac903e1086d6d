// `rlhf serve`: a policy behind the OpenAI chat API (HTTP/1.1 with
// keep-alive, Boost.Beast over Asio), a chat page at /, and feedback that
// flows into the label store.
//
// Threads: one I/O thread runs every connection; the engine's thread owns
// the model (serve/engine.h). Engine events are posted to the I/O thread, so
// connection state and the label store are touched by one thread only.
#pragma once

#include <memory>
#include <string>

#include "common/config.h"
#include "serve/engine.h"
#include "serve/openai.h"

namespace rlhf::serve {

struct ServeConfig {
  std::string checkpoint;            // policy checkpoint, or a run folder (its best, else latest)
  std::string host = "127.0.0.1";    // bind address; beyond loopback API keys are required
  int port = 8000;                   // TCP port (0: any free port)
  std::string model_name;            // the "model" clients send; default: the last part of `checkpoint`
  std::string labels;                // label store: API keys (rater tokens) and feedback; "" = none
  bool log_conversations = false;    // store conversations and replies in the label store (needs labels)
  bool require_keys = false;         // API keys even on loopback (always on beyond it)
  int64_t max_body_bytes = 1 << 20;  // larger bodies get 413
  double read_timeout_s = 15;        // to receive a whole request; also how long an idle connection stays
  double write_timeout_s = 30;       // for each write to a client that does not read
  int max_connections = 2048;        // open connections; more are closed on accept
  double shutdown_grace_s = 10;      // after SIGTERM, running requests may finish for this long
  int threads = 0;                   // LibTorch threads (0 = all cores)
  RequestLimits limits;
  EngineConfig engine;
  template <class V> void visit(V& v) {
    v("checkpoint", checkpoint);
    v("host", host);
    v("port", port, Range::between(0, 65535));
    v("model_name", model_name);
    v("labels", labels);
    v("log_conversations", log_conversations);
    v("require_keys", require_keys);
    v("max_body_bytes", max_body_bytes, Range::at_least(1024));
    v("read_timeout_s", read_timeout_s, Range::at_least(0.001));
    v("write_timeout_s", write_timeout_s, Range::at_least(0.001));
    v("max_connections", max_connections, Range::at_least(1));
    v("shutdown_grace_s", shutdown_grace_s, Range::at_least(0));
    v("threads", threads, Range::at_least(0));
    v("max_n", limits.max_n, Range::between(1, 64));
    v("default_max_tokens", limits.default_max_tokens, Range::at_least(1));
    v.section("engine", engine);
  }
};

class ChatServer {
 public:
  // Loads the policy, opens the label store if any and binds. Errors say
  // what to fix (no checkpoint, keys needed beyond loopback, port taken).
  explicit ChatServer(const ServeConfig& config);
  ~ChatServer();
  ChatServer(const ChatServer&) = delete;
  ChatServer& operator=(const ChatServer&) = delete;

  int port() const;
  const std::string& model_name() const;
  // One line saying what is served where, and what is logged.
  std::string banner() const;
  // Serves until stop() or, with `handle_signals`, SIGINT/SIGTERM.
  void run(bool handle_signals = false);
  // From any thread: stop accepting, let running requests finish within
  // shutdown_grace_s (then cancel them), and return from run().
  void stop();

  struct Impl;  // server.cpp's; public so its connection handlers can name it

 private:
  std::unique_ptr<Impl> impl_;
};

// True for 127.0.0.0/8, ::1 and "localhost".
bool is_loopback(const std::string& host);

}  // namespace rlhf::serve

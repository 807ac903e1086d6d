// rlhf serve-labels: the label service in front of a label store.
// rlhf serve: a policy behind the OpenAI chat API, with a chat page.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "labels/service.h"
#include "serve/server.h"

namespace rlhf::cli {

namespace {

void register_serve_command(CLI::App& app) {
  auto cfg = std::make_shared<serve::ServeConfig>();
  CLI::App* sub = app.add_subcommand(
      "serve", "Serve a policy over the OpenAI chat API (/v1/chat/completions, /v1/completions, /v1/models), with a "
               "chat page at / and user feedback into the label store");
  sub->add_option("--checkpoint", cfg->checkpoint, "policy checkpoint or run folder (its best, else latest)")->required();
  sub->add_option("--host", cfg->host, "bind address; beyond loopback API keys are required")->capture_default_str();
  sub->add_option("--port", cfg->port, "TCP port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  sub->add_option("--model_name", cfg->model_name, "the model id clients send (default: the checkpoint folder's name)");
  sub->add_option("--labels", cfg->labels, "label store for API keys (rater tokens) and feedback");
  sub->add_flag("--log_conversations", cfg->log_conversations,
                "keep conversations and replies in the label store (needed for feedback)");
  sub->add_flag("--require_keys", cfg->require_keys, "ask for API keys on loopback too");
  sub->add_option("--max_batch", cfg->engine.max_batch, "requests decoded together")->capture_default_str()->check(CLI::Range(1, 1024));
  sub->add_option("--max_queue", cfg->engine.max_queue, "requests waiting beyond the batch; more get 429")
      ->capture_default_str()->check(CLI::Range(0, 1 << 20));
  sub->add_option("--max_n", cfg->limits.max_n, "most replies per request (n)")->capture_default_str()->check(CLI::Range(1, 64));
  sub->add_option("--default_max_tokens", cfg->limits.default_max_tokens, "reply length when a request names none")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_option("--max_body_bytes", cfg->max_body_bytes, "larger request bodies get 413")
      ->capture_default_str()->check(CLI::Range(int64_t{1024}, int64_t{1} << 30));
  sub->add_option("--read_timeout_s", cfg->read_timeout_s, "to receive a request; idle connections close after it")
      ->capture_default_str()->check(CLI::Range(0.001, 3600.0));
  sub->add_option("--max_connections", cfg->max_connections, "open connections; more are closed on accept")
      ->capture_default_str()->check(CLI::Range(1, 1 << 20));
  sub->add_option("--shutdown_grace_s", cfg->shutdown_grace_s, "after SIGTERM, time for running requests to finish")
      ->capture_default_str()->check(CLI::Range(0.0, 3600.0));
  sub->add_option("--threads", cfg->threads, "LibTorch threads (0 = all cores)")->capture_default_str();
  sub->add_option("--weights", cfg->engine.weights, "fp32 (as trained) or bf16 (bf16 weights and KV cache: faster)")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  add_action(sub, [cfg] {
    if (!cfg->labels.empty() && !path_exists(cfg->labels)) {
      fail(ErrorKind::kUsage, "no label store at '", cfg->labels, "'; make one with `rlhf raters add NAME --db ",
           cfg->labels, "` or check the path");
    }
    serve::ChatServer server(*cfg);
    // One line a script can wait for (the port matters when --port 0).
    std::printf("%s\n", server.banner().c_str());
    std::fflush(stdout);
    server.run(/*handle_signals=*/true);
  });
}

}  // namespace

void register_service_commands(CLI::App& app) {
  auto cfg = std::make_shared<labels::ServiceConfig>();
  CLI::App* sub = app.add_subcommand("serve-labels", "Serve rating tasks to rlhf-rater over TCP (Cap'n Proto frames)");
  auto create = std::make_shared<bool>(false);
  sub->add_option("--db", cfg->db, "label store")->capture_default_str();
  sub->add_flag("--create", *create, "start an empty label store when --db names none (otherwise that is an error)");
  sub->add_option("--host", cfg->host, "bind address (0.0.0.0 serves other machines)")->capture_default_str();
  sub->add_option("--port", cfg->port, "TCP port (0: any free port)")->capture_default_str()->check(CLI::Range(0, 65535));
  sub->add_option("--gold_rate", cfg->desk.gold_rate, "chance the next task is a gold item")->capture_default_str();
  sub->add_flag("--ask_ratings", cfg->desk.ask_ratings, "also ask a 1-7 rating per reply");
  sub->add_option("--max_frame_bytes", cfg->max_frame_bytes, "larger frames close the connection")
      ->capture_default_str()
      ->check(CLI::Range(int64_t{4096}, int64_t{64} << 20));
  sub->add_option("--seed", cfg->desk.seed, "seeds left/right order and gold draws")->capture_default_str();
  sub->add_option("--tls_cert", cfg->tls_cert, "TLS certificate chain (PEM); raters then connect with --tls_ca");
  sub->add_option("--tls_key", cfg->tls_key, "private key of --tls_cert (PEM)");
  sub->add_flag("--allow_plaintext", cfg->allow_plaintext,
                "serve beyond loopback without TLS (only behind a tunnel or on a trusted network)");
  sub->add_option("--max_rationale_bytes", cfg->desk.max_rationale_bytes, "longer rationales are refused")
      ->capture_default_str()->check(CLI::Range(int64_t{0}, int64_t{1} << 20));
  sub->add_option("--store_busy_timeout_ms", cfg->store_busy_timeout_ms,
                  "a request waiting this long for another process's lock on the store is told to try again")
      ->capture_default_str()->check(CLI::Range(0, 60000));
  add_action(sub, [cfg, create] {
    // A typo in --db used to serve a fresh, empty store without a word.
    if (!*create && !path_exists(cfg->db)) {
      fail(ErrorKind::kUsage, "no label store at '", cfg->db, "'; check the path, or pass --create to start an empty one");
    }
    labels::LabelServer server(*cfg);
    // One line a script can wait for (the port matters when --port 0).
    std::printf("label service: serving %s on %s:%d%s\n", cfg->db.c_str(), cfg->host.c_str(), server.port(),
                cfg->tls_cert.empty() ? "" : " (TLS)");
    std::fflush(stdout);
    server.run(/*handle_signals=*/true);
  });
  register_serve_command(app);
}

}  // namespace rlhf::cli

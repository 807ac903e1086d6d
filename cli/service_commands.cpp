// rlhf serve-labels: the label service in front of a label store.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "common/config.h"
#include "common/error.h"
#include "common/fs.h"
#include "common/log.h"
#include "labels/service.h"

namespace rlhf::cli {

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
  add_action(sub, [cfg, create] {
    // A typo in --db used to serve a fresh, empty store without a word.
    if (!*create && !path_exists(cfg->db)) {
      fail(ErrorKind::kUsage, "no label store at '", cfg->db, "'; check the path, or pass --create to start an empty one");
    }
    labels::LabelServer server(*cfg);
    // One line a script can wait for (the port matters when --port 0).
    std::printf("label service: serving %s on %s:%d\n", cfg->db.c_str(), cfg->host.c_str(), server.port());
    std::fflush(stdout);
    server.run(/*handle_signals=*/true);
  });
}

}  // namespace rlhf::cli

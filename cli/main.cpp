// rlhf: the workbench's command line. Each subcommand is a thin layer over a
// stage library; see `rlhf --help`.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>

#include "cli/commands.h"
#include "common/error.h"
#include "common/runtime.h"

int main(int argc, char** argv) {
  rlhf::ensure_process_environment(argc, argv);
  CLI::App app{
      "rlhf: pretrain, fine-tune, collect feedback, train reward models and run PPO, in one toolchain.\n"
      "Stages read a TOML config (--config FILE) plus --section.key=value overrides;\n"
      "`rlhf config STAGE` prints a stage's keys with their defaults."};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show the help of every subcommand");
  rlhf::cli::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    rlhf::cli::run_selected(app);
  } catch (const rlhf::Error& e) {
    std::fprintf(stderr, "error (%s): %s\n", rlhf::error_kind_name(e.kind()), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "internal error: %s\nPlease report this with the command that caused it.\n", e.what());
    return 3;
  }
  return 0;
}

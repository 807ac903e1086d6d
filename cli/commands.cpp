#include "cli/commands.h"

#include <map>

#include "common/error.h"

namespace rlhf::cli {
namespace {
std::map<const CLI::App*, Action>& actions() {
  // Owned by main's lifetime; filled once at registration.
  static std::map<const CLI::App*, Action> table;
  return table;
}
}  // namespace

std::vector<std::string> StageArgs::overrides(CLI::App* sub) const {
  std::vector<std::string> out;
  for (const std::string& extra : sub->remaining()) {
    if (extra.rfind("--", 0) != 0 || extra.find('=') == std::string::npos) {
      fail(ErrorKind::kUsage, "unexpected argument '", extra,
           "'. Config overrides look like --section.key=value, e.g. --train.max_steps=100");
    }
    out.push_back(extra);
  }
  return out;
}

void add_weights_option(CLI::App* sub, std::string& weights) {
  sub->add_option("--weights", weights, "fp32 (as trained) or bf16 (faster products while sampling)")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
}

void add_action(CLI::App* sub, Action action) { actions()[sub] = std::move(action); }

void register_commands(CLI::App& app) {
  register_pretrain_commands(app);
  register_sft_commands(app);
  register_feedback_commands(app);
  register_rollout_commands(app);
  register_data_commands(app);
#ifdef RLHF_HAVE_LABEL_SERVICE
  register_service_commands(app);
#endif
}

void run_selected(CLI::App& app) {
  for (CLI::App* sub : app.get_subcommands()) {
    auto it = actions().find(sub);
    if (it != actions().end()) {
      it->second();
      return;
    }
    run_selected(*sub);
  }
}

}  // namespace rlhf::cli

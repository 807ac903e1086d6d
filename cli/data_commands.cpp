// rlhf support-data: regenerate the shipped customer-support dataset.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "support/generator.h"

namespace rlhf::cli {

void register_data_commands(CLI::App& app) {
  auto args = std::make_shared<StageArgs>();
  auto out = std::make_shared<std::string>("data/support");
  CLI::App* sub = app.add_subcommand(
      "support-data", "Generate the customer-support dataset (deterministic for a seed; see data/support/README.md)");
  sub->add_option("--out", *out, "output folder")->capture_default_str();
  sub->add_option("--config", args->config, "TOML with generator settings (optional)");
  sub->allow_extras();
  sub->footer("Overrides: --seed=7 --train_dialogues=3200 --p_terse=0.14 ... (rlhf config support-data)");
  add_action(sub, [args, out, sub] {
    auto cfg = load_config<support::GeneratorConfig>(args->config, args->overrides(sub));
    support::SupportData data = support::generate_support_data(cfg);
    support::write_support_data(data, *out);
    std::printf("wrote %zu training and %zu validation conversations and %zu held-out prompts to %s\n",
                data.train.size(), data.val.size(), data.heldout.size(), out->c_str());
  });
}

}  // namespace rlhf::cli

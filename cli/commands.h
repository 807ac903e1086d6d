// Registration of the CLI's subcommands. Each command parses its flags with
// CLI11 and calls into a stage library; no training logic lives here.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace rlhf::cli {

// A subcommand that reads a stage config: --config FILE plus any
// --section.key=value overrides (collected as CLI11 "extras").
struct StageArgs {
  std::string config;
  std::vector<std::string> overrides(CLI::App* sub) const;
};

void register_commands(CLI::App& app);
// Runs the callback of the subcommand that was parsed.
void run_selected(CLI::App& app);

// Each group adds its subcommands and their actions.
using Action = std::function<void()>;
void add_action(CLI::App* sub, Action action);
// --weights: the precision of a sampling command's matrix products
// (SamplingConfig::weights, fp32 or bf16).
void add_weights_option(CLI::App* sub, std::string& weights);
void register_pretrain_commands(CLI::App& app);
void register_data_commands(CLI::App& app);
void register_sft_commands(CLI::App& app);
void register_feedback_commands(CLI::App& app);
void register_rollout_commands(CLI::App& app);
void register_service_commands(CLI::App& app);  // not in RLHF_CORE_ONLY builds

}  // namespace rlhf::cli

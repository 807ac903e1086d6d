// rlhf support-data: regenerate the shipped customer-support dataset.
#include <cstdio>
#include <map>
#include <memory>

#include "cli/commands.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "support/generator.h"
#include "support/rubric.h"

namespace rlhf::cli {

// Mean gold score and how often each rubric finding occurs, over replies
// written by `rlhf generate` (prompt, response, finished, metadata); with
// `out`, each row again with its score and findings under "gold".
void report_gold(const std::string& path, const std::string& out) {
  double total = 0;
  size_t n = 0;
  std::map<std::string, double> rates;
  std::unique_ptr<JsonlWriter> writer;
  if (!out.empty()) writer = std::make_unique<JsonlWriter>(out, /*append=*/false);
  read_jsonl(path, [&](const Json& row, size_t line) {
    std::vector<std::string> customer;
    for (const auto& m : row.value("prompt", Json::array())) {
      if (m.value("role", "") == "user") customer.push_back(m.value("content", ""));
    }
    const support::CaseFacts facts = row.contains("metadata") ? support::facts_from_metadata(row["metadata"])
                                                                : support::infer_facts(customer);
    const support::GoldScore g =
        support::gold_score(facts, jsonl_string(row, "response", path, line), row.value("finished", true));
    total += g.total;
    ++n;
    const Json findings = g.to_json();
    for (auto it = findings.begin(); it != findings.end(); ++it) {
      if (it.value().is_boolean()) rates[it.key()] += it.value().get<bool>() ? 1 : 0;
    }
    if (writer) {
      Json scored = row;
      scored["gold"] = findings;
      writer->write(scored);
    }
  });
  if (n == 0) fail(ErrorKind::kData, path, ": no replies");
  std::printf("%zu replies, mean gold score %.3f (max %.0f)\n", n, total / n, support::gold_max());
  for (const auto& [k, v] : rates) std::printf("  %-16s %5.1f%%\n", k.c_str(), 100.0 * v / n);
}

void register_data_commands(CLI::App& app) {
  {
    auto path = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    CLI::App* sub = app.add_subcommand("gold", "Score replies (rlhf generate output) with the simulated rater's rubric");
    sub->add_option("replies", *path, "JSONL with prompt, response, finished, metadata")->required();
    sub->add_option("--out", *out, "also write each row with its score and findings (\"gold\") here");
    add_action(sub, [path, out] { report_gold(*path, *out); });
  }
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
    std::printf("wrote %zu training and %zu validation conversations, %zu held-out prompts and %zu RL prompts to %s\n",
                data.train.size(), data.val.size(), data.heldout.size(), data.rl.size(), out->c_str());
  });
}

}  // namespace rlhf::cli

#include "rollout/compare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>

#include "common/error.h"
#include "common/fs.h"
#include "common/hash.h"
#include "common/jsonl.h"
#include "common/log.h"
#include "policy/chat.h"
#include "policy/checkpoint.h"
#include "reward/rm_train.h"
#include "rollout/validation.h"
#include "train/runtime.h"

namespace rlhf {


std::vector<double> bradley_terry(const std::vector<std::vector<double>>& wins, int iterations) {
  const size_t k = wins.size();
  std::vector<double> p(k, 1.0);
  for (int it = 0; it < iterations; ++it) {
    std::vector<double> next(k);
    for (size_t i = 0; i < k; ++i) {
      double w = 0, denom = 0;
      for (size_t j = 0; j < k; ++j) {
        if (i == j) continue;
        w += wins[i][j];
        const double n = wins[i][j] + wins[j][i];
        if (n > 0) denom += n / (p[i] + p[j]);
      }
      // A small prior keeps an undefeated or winless policy finite.
      next[i] = (w + 0.5) / (denom + 1.0 / (p[i] + 1.0));
    }
    double log_mean = 0;
    for (double x : next) log_mean += std::log(x) / k;
    for (double& x : next) x /= std::exp(log_mean);
    p = next;
  }
  return p;
}

double elo_of(double strength) { return 400.0 * std::log10(strength) + 1000.0; }

namespace {

std::string fmt(double v, int digits = 3) {
  if (std::isnan(v)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

std::string bar(double rate) {
  const int n = static_cast<int>(std::lround(rate * 20));
  return std::string(static_cast<size_t>(n), '#') + std::string(static_cast<size_t>(20 - n), '.');
}

}  // namespace

Json CompareReport::to_json() const {
  Json j = {{"policies", Json::array()}, {"pairwise", Json::array()}};
  for (size_t i = 0; i < names.size(); ++i) {
    Json p = {{"name", names[i]}};
    if (!std::isnan(mean_reward[i])) p["mean_reward"] = mean_reward[i];
    if (!std::isnan(mean_gold[i])) p["mean_gold"] = mean_gold[i];
    p["mean_length"] = mean_length[i];
    if (!std::isnan(mean_kl[i])) p["mean_kl"] = mean_kl[i];
    p["end_of_turn_rate"] = end_of_turn[i];
    if (!bt_gold.empty()) p["bradley_terry_gold"] = bt_gold[i], p["elo_gold"] = elo_of(bt_gold[i]);
    if (!bt_reward.empty()) p["bradley_terry_reward"] = bt_reward[i], p["elo_reward"] = elo_of(bt_reward[i]);
    j["policies"].push_back(p);
  }
  for (const auto& r : pairs) {
    j["pairwise"].push_back({{"a", r.a}, {"b", r.b}, {"judge", r.judge}, {"a_win_rate", r.a_wins.rate},
                             {"ci95", {r.a_wins.lo, r.a_wins.hi}}, {"n", r.a_wins.n}, {"wins", r.a_wins.wins},
                             {"ties", r.a_wins.ties}, {"losses", r.a_wins.losses}});
  }
  return j;
}

std::string CompareReport::to_markdown() const {
  std::ostringstream md;
  md << "# Policy comparison\n\n## Policies\n\nKL: from the reference policy, nats per reply (length drift and a "
        "falling end-of-turn rate are the commonest reward hacks).\n\n"
     << "| policy | mean reward (RM) | mean gold | mean length | end of turn | KL |\n|---|---:|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < names.size(); ++i) {
    md << "| " << names[i] << " | " << fmt(mean_reward[i]) << " | " << fmt(mean_gold[i]) << " | " << fmt(mean_length[i], 1)
       << " | " << fmt(100 * end_of_turn[i], 1) << "% | " << fmt(mean_kl[i], 2) << " |\n";
  }
  md << "\n## Head to head\n\nWin rate of A over B per prompt (ties count half), with a bootstrap 95% interval.\n\n"
     << "| A | B | judge | A wins | 95% interval | W / T / L | |\n|---|---|---|---:|---|---|---|\n";
  for (const auto& r : pairs) {
    md << "| " << r.a << " | " << r.b << " | " << r.judge << " | " << fmt(100 * r.a_wins.rate, 1) << "% | ["
       << fmt(100 * r.a_wins.lo, 1) << "%, " << fmt(100 * r.a_wins.hi, 1) << "%] | " << r.a_wins.wins << " / "
       << r.a_wins.ties << " / " << r.a_wins.losses << " | `" << bar(r.a_wins.rate) << "` |\n";
  }
  for (const auto& [label, bt] : {std::make_pair("gold", &bt_gold), std::make_pair("reward model", &bt_reward)}) {
    if (bt->empty()) continue;
    std::vector<size_t> order(names.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return (*bt)[a] > (*bt)[b]; });
    md << "\n## Leaderboard (" << label << ", Bradley-Terry)\n\n| rank | policy | strength | Elo |\n|---:|---|---:|---:|\n";
    for (size_t r = 0; r < order.size(); ++r) {
      md << "| " << r + 1 << " | " << names[order[r]] << " | " << fmt((*bt)[order[r]]) << " | " << fmt(elo_of((*bt)[order[r]]), 0)
         << " |\n";
    }
  }
  return md.str();
}

CompareReport run_compare(const CompareConfig& c) {
  if (c.policies.size() < 2) fail(ErrorKind::kUsage, "compare needs at least two policies");
  if (!c.names.empty() && c.names.size() != c.policies.size()) {
    fail(ErrorKind::kUsage, "give one name per policy (", c.policies.size(), "), or none");
  }
  set_torch_threads(c.threads);
  const size_t k = c.policies.size();
  CompareReport report;
  for (size_t i = 0; i < k; ++i) {
    report.names.push_back(!c.names.empty() ? c.names[i] : std::filesystem::path(c.policies[i]).filename().string());
  }
  std::unique_ptr<LoadedRewardModel> rm;
  if (!c.reward_model.empty()) rm = std::make_unique<LoadedRewardModel>(load_reward_model(c.reward_model));
  std::unique_ptr<LoadedPolicy> reference;
  if (!c.reference.empty()) {
    reference = std::make_unique<LoadedPolicy>(load_policy(resolve_checkpoint(c.reference, /*prefer_best=*/true)));
  }

  // replies[policy][prompt * samples + s]
  std::vector<std::vector<std::string>> replies(k);
  std::vector<std::vector<bool>> finished(k);
  std::vector<std::vector<double>> reward(k), gold(k), length(k), kl(k);
  std::vector<ValidationPrompt> prompts;
  for (size_t i = 0; i < k; ++i) {
    LoadedPolicy p = load_chat_policy(c.policies[i]);
    const ChatTemplate chat(p.tokenizer);
    ValidationConfig vc;
    vc.prompts = c.prompts;
    vc.max_prompts = c.max_prompts;
    const std::vector<ValidationPrompt> ps =
        load_validation_prompts(vc, chat, p.trainer_state.value("system_prompt", ""));
    if (prompts.empty()) prompts = ps;
    std::vector<std::vector<int32_t>> ids;
    std::vector<uint64_t> seeds;
    for (size_t q = 0; q < ps.size(); ++q) {
      for (int s = 0; s < c.samples; ++s) {
        ids.push_back(ps[q].ids);
        seeds.push_back(mix_seed({static_cast<uint64_t>(c.sampling.seed), q, static_cast<uint64_t>(s)}));
      }
    }
    for (size_t b = 0; b < ids.size(); b += 64) {
      const size_t e = std::min(ids.size(), b + 64);
      const std::vector<std::vector<int32_t>> batch(ids.begin() + static_cast<long>(b), ids.begin() + static_cast<long>(e));
      Generation g = generate(p.model, batch, c.sampling, chat.stop_tokens(), chat.pad_id(),
                              {seeds.begin() + static_cast<long>(b), seeds.begin() + static_cast<long>(e)});
      if (reference) {
        if (reference->tokenizer.fingerprint() != p.tokenizer.fingerprint()) {
          fail(ErrorKind::kData, "the reference ", reference->dir, " uses a different tokenizer from ", p.dir);
        }
        const torch::Tensor d = generation_kl(p.model, reference->model, batch, g, c.sampling.max_new_tokens,
                                              chat.pad_id(), c.sampling.temperature);
        for (int64_t r = 0; r < d.size(0); ++r) kl[i].push_back(d[r].item<double>());
      }
      for (const ChatReply& reply : decode_replies(chat, g.tokens, g.lengths, g.finished)) {
        replies[i].push_back(reply.text);
        finished[i].push_back(reply.finished);
        length[i].push_back(static_cast<double>(reply.tokens));
      }
      log_info("compare: ", report.names[i], " ", e, "/", ids.size(), " replies");
    }
    for (size_t r = 0; r < replies[i].size(); ++r) {
      const ValidationPrompt& vp = prompts[r / c.samples];
      gold[i].push_back(c.gold ? gold_of(vp.metadata, vp.conversation, replies[i][r], finished[i][r]) : std::nan(""));
    }
    if (rm) {
      if (rm->tokenizer.fingerprint() != p.tokenizer.fingerprint()) {
        fail(ErrorKind::kData, "the reward model ", rm->dir, " uses a different tokenizer from ", p.dir);
      }
      const ChatTemplate rm_chat(rm->tokenizer);
      std::vector<const Conversation*> pp;
      std::vector<const std::string*> rr;
      for (size_t r = 0; r < replies[i].size(); ++r) {
        pp.push_back(&prompts[r / c.samples].conversation);
        rr.push_back(&replies[i][r]);
      }
      for (double raw : score_replies(rm->model, rm_chat, pp, rr, 32, torch::kCPU, finished[i])) {
        reward[i].push_back(rm->model->normalized(torch::tensor(raw)).item<double>());
      }
    }
  }

  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    size_t n = 0;
    for (double x : v) {
      if (!std::isnan(x)) {
        s += x;
        ++n;
      }
    }
    return n ? s / n : std::nan("");
  };
  for (size_t i = 0; i < k; ++i) {
    report.mean_reward.push_back(rm ? mean(reward[i]) : std::nan(""));
    report.mean_gold.push_back(mean(gold[i]));
    report.mean_length.push_back(mean(length[i]));
    report.mean_kl.push_back(reference ? mean(kl[i]) : std::nan(""));
    double done = 0;
    for (bool f : finished[i]) done += f ? 1 : 0;
    report.end_of_turn.push_back(finished[i].empty() ? std::nan("") : done / static_cast<double>(finished[i].size()));
  }
  std::vector<std::vector<double>> wins_gold(k, std::vector<double>(k, 0)), wins_rm(k, std::vector<double>(k, 0));
  for (size_t a = 0; a < k; ++a) {
    for (size_t b = a + 1; b < k; ++b) {
      for (const char* judge : {"gold", "reward_model"}) {
        const bool by_gold = std::string(judge) == "gold";
        const auto& sa = by_gold ? gold[a] : reward[a];
        const auto& sb = by_gold ? gold[b] : reward[b];
        std::vector<double> outcomes;
        for (size_t r = 0; r < sa.size() && r < sb.size(); ++r) {
          if (std::isnan(sa[r]) || std::isnan(sb[r])) continue;
          outcomes.push_back(sa[r] > sb[r] ? 1.0 : sa[r] == sb[r] ? 0.5 : 0.0);
        }
        if (outcomes.empty()) continue;
        auto& w = by_gold ? wins_gold : wins_rm;
        for (double o : outcomes) {
          w[a][b] += o;
          w[b][a] += 1 - o;
        }
        report.pairs.push_back({report.names[a], report.names[b], judge,
                                win_rate(outcomes, c.bootstrap, mix_seed({a, b, static_cast<uint64_t>(by_gold)}))});
      }
    }
  }
  if (k > 2) {
    if (!std::isnan(report.mean_gold[0])) report.bt_gold = bradley_terry(wins_gold);
    if (rm) report.bt_reward = bradley_terry(wins_rm);
  }

  make_dirs(c.out);
  write_file_atomic(join_path(c.out, "compare.json"), report.to_json().dump(2));
  write_file_atomic(join_path(c.out, "compare.md"), report.to_markdown());
  JsonlWriter out(join_path(c.out, "replies.jsonl"), false);
  for (size_t r = 0; r < replies[0].size(); ++r) {
    Json row = {{"prompt", conversation_to_json(prompts[r / c.samples].conversation)}, {"replies", Json::object()}};
    for (size_t i = 0; i < k; ++i) {
      Json one = {{"response", replies[i][r]}, {"finished", static_cast<bool>(finished[i][r])}};
      if (!std::isnan(gold[i][r])) one["gold"] = gold[i][r];
      if (rm) one["reward"] = reward[i][r];
      row["replies"][report.names[i]] = one;
    }
    out.write(row);
  }
  return report;
}

}  // namespace rlhf

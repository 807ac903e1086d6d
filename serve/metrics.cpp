#include "serve/metrics.h"

#include <algorithm>
#include <cstdio>

namespace rlhf::serve {
namespace {

std::string number(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", x);
  return buf;
}

void header(const std::string& name, const std::string& help, const char* type, std::string& out) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void scalar(const std::string& name, const std::string& help, const char* type, double value, std::string& out) {
  header(name, help, type, out);
  out += name + " " + number(value) + "\n";
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  const size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& help, std::string& out) const {
  header(name, help, "histogram", out);
  uint64_t cumulative = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    out += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  out += name + "_sum " + number(sum_) + "\n";
  out += name + "_count " + std::to_string(count_) + "\n";
}

std::string ServerMetrics::render(const EngineStats& engine, int max_batch) const {
  std::string out;
  header("rlhf_requests_total", "HTTP requests by endpoint and status.", "counter", out);
  for (const auto& [key, n] : requests) {
    out += "rlhf_requests_total{endpoint=\"" + key.first + "\",status=\"" + std::to_string(key.second) + "\"} " +
           std::to_string(n) + "\n";
  }
  scalar("rlhf_prompt_tokens_total", "Prompt tokens of finished requests.", "counter", static_cast<double>(prompt_tokens), out);
  scalar("rlhf_generation_tokens_total", "Tokens generated for finished requests.", "counter",
         static_cast<double>(completion_tokens), out);
  scalar("rlhf_cancelled_requests_total", "Requests whose client left before the reply ended.", "counter",
         static_cast<double>(cancelled), out);
  scalar("rlhf_queue_length", "Requests waiting for a row in the batch.", "gauge", static_cast<double>(engine.queued), out);
  scalar("rlhf_running_rows", "Rows decoding in the batch now.", "gauge", static_cast<double>(engine.running), out);
  scalar("rlhf_batch_capacity", "Rows the batch can hold (--engine.max_batch).", "gauge", max_batch, out);
  const double occupancy =
      engine.steps == 0 ? 0.0 : static_cast<double>(engine.row_steps) / (static_cast<double>(engine.steps) * max_batch);
  scalar("rlhf_batch_occupancy", "Mean share of the batch's rows in use per decode step, since start.", "gauge",
         occupancy, out);
  scalar("rlhf_decode_steps_total", "Batched decode steps.", "counter", static_cast<double>(engine.steps), out);
  scalar("rlhf_open_connections", "Open HTTP connections.", "gauge", static_cast<double>(open_connections), out);
  scalar("rlhf_refused_connections_total", "Connections closed on accept (over --max_connections).", "counter",
         static_cast<double>(refused_connections), out);
  time_to_first_token.render("rlhf_time_to_first_token_seconds", "From request received to its first token.", out);
  inter_token.render("rlhf_inter_token_latency_seconds", "Between consecutive tokens of one reply.", out);
  request_duration.render("rlhf_request_duration_seconds", "From request received to its last token.", out);
  return out;
}

}  // namespace rlhf::serve

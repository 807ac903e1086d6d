// The server's counters and latency histograms in Prometheus' text format
// (GET /metrics). Used from the server's I/O thread only.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "serve/engine.h"

namespace rlhf::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // The _bucket, _sum and _count lines of metric `name`.
  void render(const std::string& name, const std::string& help, std::string& out) const;
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket, not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

struct ServerMetrics {
  std::map<std::pair<std::string, int>, uint64_t> requests;  // (endpoint, status) -> count
  uint64_t prompt_tokens = 0, completion_tokens = 0;
  uint64_t open_connections = 0, refused_connections = 0;
  uint64_t cancelled = 0;  // requests whose client left before the end
  Histogram time_to_first_token{{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}};
  Histogram inter_token{{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}};
  Histogram request_duration{{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120}};

  void count_request(const std::string& endpoint, int status) { ++requests[{endpoint, status}]; }
  std::string render(const EngineStats& engine, int max_batch) const;
};

}  // namespace rlhf::serve

// Continuous batching: one thread owns the model and decodes every running
// request together, one token per step. A request joins the running batch at
// a step boundary (its prompt is prefilled alone, then its keys and values are
// merged into the batch's KV cache) and leaves when it stops, hits its token
// limit or is cancelled, freeing its row.
//
// Each row keeps its own sampling settings and its own random stream (one
// uniform draw per step from the request's seed, as policy/generate.h does),
// and padding never reaches attention, so a request produces the same tokens
// whether it runs alone or beside 31 others (up to the last bits of float
// arithmetic at other batch sizes).
//
// The cache layout: row r's n_r real tokens fill the last n_r filled
// positions, so after rows leave, the leading positions that no row uses are
// dropped and the cache is never longer than the longest row.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/config.h"
#include "policy/generate.h"
#include "policy/gpt.h"

namespace rlhf::serve {

struct EngineConfig {
  int max_batch = 32;       // rows decoded together; later requests wait in the queue
  int max_queue = 256;      // waiting requests; submit() refuses more (HTTP 429)
  int cache_headroom = 32;  // positions allocated ahead each time the batch cache is rebuilt
  std::string weights = "fp32";  // "fp32" or "bf16": bf16 weights and KV cache (faster on AVX512-BF16 CPUs and GPUs)
  template <class V> void visit(V& v) {
    v("max_batch", max_batch, Range::at_least(1));
    v("max_queue", max_queue, Range::at_least(0));
    v("cache_headroom", cache_headroom, Range::at_least(1));
    v("weights", weights);
  }
};

struct EngineRequest {
  std::vector<int32_t> prompt;  // token ids; at least one, shorter than the context
  SamplingConfig sampling;      // temperature, top_k, top_p, max_new_tokens (seed unused)
  uint64_t seed = 0;            // the row's random stream
};

enum class FinishReason { kRunning, kStop, kLength, kCancelled };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", "cancelled"

// One generated token, or the end of a request. `token` is -1 on an event
// that only ends the request (cancelled); a stop token is reported with
// reason kStop and is not part of the reply.
struct TokenEvent {
  int32_t token = -1;
  FinishReason finish = FinishReason::kRunning;
};
// Called on the engine thread: keep it short (post the work elsewhere).
using EventFn = std::function<void(const TokenEvent&)>;

// What submit() hands back: cancel() from any thread frees the row at the
// next step boundary (the request then gets a kCancelled event).
class RequestHandle {
 public:
  void cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

struct EngineStats {
  size_t queued = 0;           // waiting to join
  size_t running = 0;          // rows in the batch
  uint64_t steps = 0;          // decode steps so far
  uint64_t tokens = 0;         // tokens generated so far
  uint64_t prompt_tokens = 0;  // prompt tokens prefilled so far
  uint64_t row_steps = 0;      // sum over steps of the rows decoded (occupancy = row_steps / (steps * max_batch))
};

class Engine {
 public:
  // Starts the decoding thread. The engine owns `model` from now on.
  Engine(GPT model, std::vector<int32_t> stop_tokens, EngineConfig config);
  ~Engine();  // cancels everything and joins the thread
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Thread-safe. nullptr when the queue is full or the engine is shutting
  // down. The prompt must fit: prompt + max_new_tokens <= the context
  // (max_new_tokens is cut to fit otherwise), else an Error.
  std::shared_ptr<RequestHandle> submit(EngineRequest request, EventFn on_event);

  // Stops admitting requests: queued ones are cancelled at once, running
  // ones finish until `deadline` and are cancelled then. Returns when no row
  // is left.
  void shutdown(std::chrono::steady_clock::time_point deadline);

  EngineStats stats() const;
  const GPTConfig& model_config() const { return model_config_; }
  const EngineConfig& config() const { return config_; }

 private:
  struct Job;
  struct Row;
  void loop();
  void admit(std::vector<std::shared_ptr<Job>>& jobs, std::vector<Row>& rows, KVCache& cache);
  // Prefills the prompts of `jobs` as one left-padded batch; returns its
  // cache and the logits after each prompt [B, V].
  torch::Tensor prefill(const std::vector<std::shared_ptr<Job>>& jobs, KVCache& cache);
  void step(std::vector<Row>& rows, KVCache& cache);
  // Hands a row's event to its request. A last event first takes the row off
  // the running count, so a client that has seen its reply end never reads
  // that row in stats() (or /metrics) afterwards.
  void emit(Job& job, const TokenEvent& event);

  GPT model_;
  GPTConfig model_config_;
  // With weights = "bf16": the model's bf16 copies for the engine's life
  // (the served model never trains), and the KV cache's dtype.
  std::optional<LowPrecisionWeights> low_precision_;
  c10::optional<torch::ScalarType> cache_dtype_;
  std::vector<int32_t> stop_tokens_;
  EngineConfig config_;

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  bool exit_ = false;
  size_t running_ = 0;
  std::chrono::steady_clock::time_point deadline_;
  EngineStats stats_;
  std::thread thread_;
};

// One row of a cache to carry into a merged one: its real tokens are the
// last `filled` filled positions of row `row` of `cache`.
struct CacheRow {
  const KVCache* cache = nullptr;
  int64_t row = 0;
  int64_t filled = 0;
};
// A batch cache holding `rows` in order, right-aligned (see the layout
// above), as long as the longest row plus `headroom` free positions (at most
// `max_positions`). Exposed for tests.
KVCache merge_caches(const std::vector<CacheRow>& rows, int64_t headroom, int64_t max_positions);

}  // namespace rlhf::serve

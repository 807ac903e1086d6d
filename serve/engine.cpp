#include "serve/engine.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "common/error.h"
#include "common/hash.h"

namespace rlhf::serve {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kRunning: return "running";
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "?";
}

struct Engine::Job {
  EngineRequest request;
  EventFn on_event;
  std::shared_ptr<RequestHandle> handle;
};

struct Engine::Row {
  std::shared_ptr<Job> job;
  SplitMix rng{0};
  int32_t last = 0;     // the token to feed next
  int64_t filled = 0;   // real tokens in the cache
  int64_t generated = 0;
  int64_t max_new = 0;
  bool done = false;
};

KVCache merge_caches(const std::vector<CacheRow>& rows, int64_t headroom, int64_t max_positions) {
  RLHF_CHECK(!rows.empty(), "merge_caches needs a row");
  const KVCache& ref = *rows[0].cache;
  const int64_t layers = static_cast<int64_t>(ref.k.size());
  const int64_t H = ref.k[0].size(1), D = ref.k[0].size(3);
  const int64_t B = static_cast<int64_t>(rows.size());
  int64_t len = 0;
  for (const CacheRow& r : rows) len = std::max(len, r.filled);
  const int64_t capacity = std::max(len + 1, std::min(len + headroom, max_positions));
  KVCache out;
  out.length = len;
  out.key_mask = torch::zeros({B, capacity}, ref.key_mask.options());
  for (int64_t l = 0; l < layers; ++l) {
    out.k.push_back(torch::zeros({B, H, capacity, D}, ref.k[0].options()));
    out.v.push_back(torch::zeros({B, H, capacity, D}, ref.v[0].options()));
  }
  for (int64_t b = 0; b < B; ++b) {
    const CacheRow& r = rows[static_cast<size_t>(b)];
    const int64_t n = r.filled, src = r.cache->length - n, dst = len - n;
    for (int64_t l = 0; l < layers; ++l) {
      out.k[l][b].narrow(1, dst, n).copy_(r.cache->k[l][r.row].narrow(1, src, n));
      out.v[l][b].narrow(1, dst, n).copy_(r.cache->v[l][r.row].narrow(1, src, n));
    }
    out.key_mask[b].narrow(0, dst, n).copy_(r.cache->key_mask[r.row].narrow(0, src, n));
  }
  return out;
}

Engine::Engine(GPT model, std::vector<int32_t> stop_tokens, EngineConfig config)
    : model_(std::move(model)),
      model_config_(model_->config()),
      stop_tokens_(std::move(stop_tokens)),
      config_(config) {
  model_->eval();
  const torch::ScalarType dtype = sampling_weights_dtype(config_.weights, "engine.weights");
  if (dtype != model_->transformer->wte->weight.scalar_type()) low_precision_.emplace(model_, dtype);
  cache_dtype_ = kv_cache_dtype(model_, dtype);
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    exit_ = true;
    deadline_ = std::chrono::steady_clock::now();
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<RequestHandle> Engine::submit(EngineRequest request, EventFn on_event) {
  const int64_t p = static_cast<int64_t>(request.prompt.size());
  RLHF_CHECK(p >= 1 && p < model_config_.n_positions, "a prompt of ", p, " tokens does not fit the context of ",
             model_config_.n_positions);
  request.sampling.max_new_tokens =
      static_cast<int>(std::min<int64_t>(request.sampling.max_new_tokens, model_config_.n_positions - p));
  auto job = std::make_shared<Job>();
  job->request = std::move(request);
  job->on_event = std::move(on_event);
  job->handle = std::make_shared<RequestHandle>();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Free rows take requests at the next step; max_queue more may wait.
    const size_t free_rows = static_cast<size_t>(config_.max_batch) - std::min<size_t>(running_, config_.max_batch);
    if (stopping_ || queue_.size() >= static_cast<size_t>(config_.max_queue) + free_rows) return nullptr;
    queue_.push_back(job);
    stats_.queued = queue_.size();
  }
  wake_.notify_all();
  return job->handle;
}

void Engine::shutdown(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mutex_);
  stopping_ = true;
  deadline_ = deadline;
  wake_.notify_all();
  wake_.wait(lock, [this] { return queue_.empty() && running_ == 0; });
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EngineStats stats = stats_;
  stats.running = running_;
  return stats;
}

void Engine::loop() {
  torch::NoGradGuard no_grad;
  std::vector<Row> rows;
  KVCache cache;
  auto live_rows = [](const std::vector<Row>& rows) {
    return static_cast<size_t>(std::count_if(rows.begin(), rows.end(), [](const Row& r) { return !r.done; }));
  };
  for (;;) {
    std::vector<std::shared_ptr<Job>> admitted, refused;
    bool past_deadline = false;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return exit_ || !rows.empty() || !queue_.empty(); });
      if (stopping_) {
        refused.assign(queue_.begin(), queue_.end());
        queue_.clear();
        past_deadline = std::chrono::steady_clock::now() >= deadline_;
      }
      while (!queue_.empty() && rows.size() + admitted.size() < static_cast<size_t>(config_.max_batch)) {
        admitted.push_back(queue_.front());
        queue_.pop_front();
      }
      stats_.queued = queue_.size();
      running_ = live_rows(rows) + admitted.size();  // rows finished last step leave in admit()
      if (exit_ && rows.empty() && admitted.empty() && refused.empty()) break;
    }
    for (auto& job : refused) job->on_event({-1, FinishReason::kCancelled});
    for (Row& row : rows) {
      if (!row.done && (past_deadline || row.job->handle->cancelled())) {
        emit(*row.job, {-1, FinishReason::kCancelled});
        row.done = true;
      }
    }
    admit(admitted, rows, cache);
    if (!rows.empty()) step(rows, cache);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = live_rows(rows);
    }
    wake_.notify_all();  // shutdown() waits for the batch to empty
  }
  std::lock_guard<std::mutex> lock(mutex_);
  running_ = 0;
  wake_.notify_all();
}

namespace {

bool is_stop(int32_t token, const std::vector<int32_t>& stops) {
  return std::find(stops.begin(), stops.end(), token) != stops.end();
}

// The next token of each row from logits [B, V] (on the CPU): one uniform
// draw per row from its own stream, and one sampling call per group of rows
// with the same settings (rows are independent in sample_from_logits).
std::vector<int32_t> sample_rows(const torch::Tensor& logits, const std::vector<const SamplingConfig*>& settings,
                                 std::vector<SplitMix*>& rngs) {
  const size_t B = settings.size();
  std::vector<float> uniform(B);
  for (size_t b = 0; b < B; ++b) uniform[b] = static_cast<float>(rngs[b]->uniform());
  std::map<std::tuple<double, int, double>, std::vector<int64_t>> groups;
  for (size_t b = 0; b < B; ++b) {
    const SamplingConfig& c = *settings[b];
    groups[{c.temperature, c.top_k, c.top_p}].push_back(static_cast<int64_t>(b));
  }
  std::vector<int32_t> out(B);
  for (const auto& [key, rows] : groups) {
    const torch::Tensor index = torch::tensor(rows, torch::kLong);
    std::vector<float> u;
    for (int64_t r : rows) u.push_back(uniform[static_cast<size_t>(r)]);
    const torch::Tensor picked = sample_from_logits(logits.index_select(0, index), *settings[rows[0]],
                                                    torch::tensor(u, torch::kFloat))
                                     .to(torch::kLong)
                                     .contiguous();
    const int64_t* p = picked.data_ptr<int64_t>();
    for (size_t i = 0; i < rows.size(); ++i) out[static_cast<size_t>(rows[i])] = static_cast<int32_t>(p[i]);
  }
  return out;
}

}  // namespace

torch::Tensor Engine::prefill(const std::vector<std::shared_ptr<Job>>& jobs, KVCache& cache) {
  const torch::Device device = model_->transformer->wte->weight.device();
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& job : jobs) prompts.push_back(job->request.prompt);
  const PromptBatch batch = left_pad_prompts(prompts, model_config_.n_positions, 0, device);
  const int64_t T = batch.ids.size(1);
  cache = model_->make_cache(batch.ids.size(0), T, cache_dtype_);
  return model_->forward(batch.ids, batch.mask, &cache).select(1, T - 1).to(torch::kCPU);
}

void Engine::admit(std::vector<std::shared_ptr<Job>>& jobs, std::vector<Row>& rows, KVCache& cache) {
  std::vector<std::shared_ptr<Job>> live;
  for (auto& job : jobs) {
    if (job->handle->cancelled()) {
      emit(*job, {-1, FinishReason::kCancelled});
    } else {
      live.push_back(job);
    }
  }
  KVCache prefilled;
  std::vector<Row> joining;
  std::vector<int64_t> joining_rows;  // their rows in `prefilled`
  uint64_t prompt_tokens = 0;
  if (!live.empty()) {
    const torch::Tensor logits = prefill(live, prefilled);
    std::vector<Row> fresh(live.size());
    std::vector<const SamplingConfig*> settings;
    std::vector<SplitMix*> rngs;
    for (size_t i = 0; i < live.size(); ++i) {
      fresh[i].rng = SplitMix(live[i]->request.seed);
      settings.push_back(&live[i]->request.sampling);
      rngs.push_back(&fresh[i].rng);
    }
    const std::vector<int32_t> tokens = sample_rows(logits, settings, rngs);
    for (size_t i = 0; i < live.size(); ++i) {
      const auto& job = live[i];
      Row& row = fresh[i];
      row.job = job;
      row.filled = static_cast<int64_t>(job->request.prompt.size());
      row.max_new = job->request.sampling.max_new_tokens;
      prompt_tokens += static_cast<uint64_t>(row.filled);
      const int32_t token = tokens[i];
      row.generated = 1;
      row.last = token;
      if (is_stop(token, stop_tokens_)) {
        emit(*job, {token, FinishReason::kStop});
      } else if (row.generated >= row.max_new) {
        emit(*job, {token, FinishReason::kLength});
      } else {
        emit(*job, {token, FinishReason::kRunning});
        joining.push_back(std::move(row));
        joining_rows.push_back(static_cast<int64_t>(i));
      }
    }
  }
  // Rebuild the batch cache when rows left or joined, or it is full.
  std::vector<size_t> keep;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].done) keep.push_back(i);
  }
  const bool full = !keep.empty() && cache.length + 1 > cache.key_mask.size(1);
  if (joining.empty() && !full && keep.size() != rows.size() && !keep.empty()) {
    // Rows left and none joined: drop them, no re-layout.
    const torch::Tensor index =
        torch::tensor(std::vector<int64_t>(keep.begin(), keep.end()), torch::kLong).to(cache.key_mask.device());
    for (auto& t : cache.k) t = t.index_select(0, index);
    for (auto& t : cache.v) t = t.index_select(0, index);
    cache.key_mask = cache.key_mask.index_select(0, index);
    std::vector<Row> next;
    for (size_t i : keep) next.push_back(std::move(rows[i]));
    rows = std::move(next);
  } else if (keep.size() != rows.size() || !joining.empty() || full) {
    std::vector<CacheRow> sources;
    std::vector<Row> next;
    for (size_t i : keep) {
      sources.push_back({&cache, static_cast<int64_t>(i), rows[i].filled});
      next.push_back(std::move(rows[i]));
    }
    for (size_t j = 0; j < joining.size(); ++j) {
      sources.push_back({&prefilled, joining_rows[j], joining[j].filled});
      next.push_back(std::move(joining[j]));
    }
    cache = sources.empty() ? KVCache() : merge_caches(sources, config_.cache_headroom, model_config_.n_positions);
    rows = std::move(next);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.prompt_tokens += prompt_tokens;
  stats_.tokens += live.size();
}

void Engine::emit(Job& job, const TokenEvent& event) {
  if (event.finish != FinishReason::kRunning) {
    std::lock_guard<std::mutex> lock(mutex_);
    running_ -= std::min<size_t>(running_, 1);
  }
  job.on_event(event);
}

void Engine::step(std::vector<Row>& rows, KVCache& cache) {
  const torch::Device device = model_->transformer->wte->weight.device();
  const int64_t B = static_cast<int64_t>(rows.size());
  std::vector<int64_t> last(B);
  for (int64_t b = 0; b < B; ++b) last[b] = rows[b].last;
  const torch::Tensor input = torch::tensor(last, torch::kLong).view({B, 1}).to(device);
  const torch::Tensor logits =
      model_->forward(input, torch::ones({B, 1}, torch::kLong).to(device), &cache).select(1, 0).to(torch::kCPU);
  std::vector<const SamplingConfig*> settings;
  std::vector<SplitMix*> rngs;
  for (Row& row : rows) {
    settings.push_back(&row.job->request.sampling);
    rngs.push_back(&row.rng);
  }
  const std::vector<int32_t> tokens = sample_rows(logits, settings, rngs);
  for (int64_t b = 0; b < B; ++b) {
    Row& row = rows[b];
    row.filled += 1;
    const int32_t token = tokens[static_cast<size_t>(b)];
    row.generated += 1;
    row.last = token;
    FinishReason finish = FinishReason::kRunning;
    if (is_stop(token, stop_tokens_)) {
      finish = FinishReason::kStop;
    } else if (row.generated >= row.max_new) {
      finish = FinishReason::kLength;
    }
    emit(*row.job, {token, finish});
    row.done = finish != FinishReason::kRunning;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.steps += 1;
  stats_.tokens += static_cast<uint64_t>(B);
  stats_.row_steps += static_cast<uint64_t>(B);
}

}  // namespace rlhf::serve

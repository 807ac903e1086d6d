#include "serve/engine.h"

#include <torch/torch.h>

#include <algorithm>

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

KVCache merge_caches(const KVCache& old, const std::vector<std::pair<int64_t, int64_t>>& keep,
                     const std::vector<const KVCache*>& added, int64_t headroom, int64_t max_positions) {
  const auto& ref = !keep.empty() ? old : *added.at(0);
  const int64_t layers = static_cast<int64_t>(ref.k.size());
  const int64_t H = ref.k[0].size(1), D = ref.k[0].size(3);
  const int64_t B = static_cast<int64_t>(keep.size() + added.size());
  int64_t len = 0;
  for (const auto& [row, filled] : keep) len = std::max(len, filled);
  for (const KVCache* c : added) len = std::max(len, c->length);
  const int64_t capacity = std::max(len + 1, std::min(len + headroom, max_positions));
  const auto opts = ref.k[0].options();
  KVCache out;
  out.length = len;
  out.key_mask = torch::zeros({B, capacity}, ref.key_mask.options());
  for (int64_t l = 0; l < layers; ++l) {
    out.k.push_back(torch::zeros({B, H, capacity, D}, opts));
    out.v.push_back(torch::zeros({B, H, capacity, D}, opts));
  }
  if (!keep.empty()) {
    // Every kept row's tokens lie in the last `len` (or fewer) filled
    // positions of the old cache: move that block, right-aligned.
    std::vector<int64_t> rows;
    for (const auto& kr : keep) rows.push_back(kr.first);
    const torch::Tensor index = torch::tensor(rows, torch::kLong).to(opts.device());
    const int64_t n = std::min(len, old.length), src = old.length - n, dst = len - n;
    const int64_t K = static_cast<int64_t>(keep.size());
    for (int64_t l = 0; l < layers; ++l) {
      out.k[l].narrow(0, 0, K).narrow(2, dst, n).copy_(old.k[l].index_select(0, index).narrow(2, src, n));
      out.v[l].narrow(0, 0, K).narrow(2, dst, n).copy_(old.v[l].index_select(0, index).narrow(2, src, n));
    }
    out.key_mask.narrow(0, 0, K).narrow(1, dst, n).copy_(old.key_mask.index_select(0, index).narrow(1, src, n));
  }
  int64_t b = static_cast<int64_t>(keep.size());
  for (const KVCache* c : added) {
    const int64_t n = c->length, dst = len - n;
    for (int64_t l = 0; l < layers; ++l) {
      out.k[l][b].narrow(1, dst, n).copy_(c->k[l][0].narrow(1, 0, n));
      out.v[l][b].narrow(1, dst, n).copy_(c->v[l][0].narrow(1, 0, n));
    }
    out.key_mask[b].narrow(0, dst, n).copy_(c->key_mask[0].narrow(0, 0, n));
    ++b;
  }
  return out;
}

Engine::Engine(GPT model, std::vector<int32_t> stop_tokens, EngineConfig config)
    : model_(std::move(model)),
      model_config_(model_->config()),
      stop_tokens_(std::move(stop_tokens)),
      config_(config) {
  model_->eval();
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
  return stats_;
}

void Engine::loop() {
  torch::NoGradGuard no_grad;
  std::vector<Row> rows;
  KVCache cache;
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
      running_ = rows.size() + admitted.size();
      if (exit_ && rows.empty() && admitted.empty() && refused.empty()) break;
    }
    for (auto& job : refused) job->on_event({-1, FinishReason::kCancelled});
    for (Row& row : rows) {
      if (!row.done && (past_deadline || row.job->handle->cancelled())) {
        row.job->on_event({-1, FinishReason::kCancelled});
        row.done = true;
      }
    }
    admit(admitted, rows, cache);
    if (!rows.empty()) step(rows, cache);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      running_ = static_cast<size_t>(std::count_if(rows.begin(), rows.end(), [](const Row& r) { return !r.done; }));
      stats_.running = running_;
    }
    wake_.notify_all();  // shutdown() waits for the batch to empty
  }
  std::lock_guard<std::mutex> lock(mutex_);
  running_ = 0;
  stats_.running = 0;
  wake_.notify_all();
}

namespace {

bool is_stop(int32_t token, const std::vector<int32_t>& stops) {
  return std::find(stops.begin(), stops.end(), token) != stops.end();
}

int32_t sample_row(const torch::Tensor& logits, const SamplingConfig& sampling, SplitMix& rng) {
  const torch::Tensor u = torch::full({1}, static_cast<float>(rng.uniform()), torch::kFloat).to(logits.device());
  return static_cast<int32_t>(sample_from_logits(logits.unsqueeze(0), sampling, u).item<int64_t>());
}

}  // namespace

void Engine::admit(std::vector<std::shared_ptr<Job>>& jobs, std::vector<Row>& rows, KVCache& cache) {
  const torch::Device device = model_->transformer->wte->weight.device();
  std::vector<KVCache> prefilled;
  std::vector<Row> joining;
  uint64_t prompt_tokens = 0;
  for (auto& job : jobs) {
    if (job->handle->cancelled()) {
      job->on_event({-1, FinishReason::kCancelled});
      continue;
    }
    const auto& p = job->request.prompt;
    const int64_t T = static_cast<int64_t>(p.size());
    torch::Tensor ids = torch::tensor(std::vector<int64_t>(p.begin(), p.end()), torch::kLong).view({1, T}).to(device);
    KVCache c = model_->make_cache(1, T);
    const torch::Tensor logits = model_->forward(ids, torch::ones({1, T}, torch::kLong).to(device), &c).select(1, T - 1);
    prompt_tokens += static_cast<uint64_t>(T);
    Row row;
    row.job = job;
    row.rng = SplitMix(job->request.seed);
    row.filled = T;
    row.max_new = job->request.sampling.max_new_tokens;
    const int32_t token = sample_row(logits[0], job->request.sampling, row.rng);
    row.generated = 1;
    row.last = token;
    if (is_stop(token, stop_tokens_)) {
      job->on_event({token, FinishReason::kStop});
    } else if (row.generated >= row.max_new) {
      job->on_event({token, FinishReason::kLength});
    } else {
      job->on_event({token, FinishReason::kRunning});
      joining.push_back(std::move(row));
      prefilled.push_back(std::move(c));
    }
  }
  // Rebuild the batch cache when rows left or joined, or it is full.
  std::vector<std::pair<int64_t, int64_t>> keep;
  for (size_t i = 0; i < rows.size(); ++i) {
    if (!rows[i].done) keep.emplace_back(static_cast<int64_t>(i), rows[i].filled);
  }
  const bool changed = keep.size() != rows.size() || !joining.empty();
  const bool full = !keep.empty() && cache.length + 1 > cache.key_mask.size(1);
  if (changed || full) {
    std::vector<Row> next;
    for (const auto& [i, filled] : keep) next.push_back(std::move(rows[static_cast<size_t>(i)]));
    for (Row& r : joining) next.push_back(std::move(r));
    if (next.empty()) {
      cache = KVCache();
    } else {
      std::vector<const KVCache*> added;
      for (const auto& c : prefilled) added.push_back(&c);
      cache = merge_caches(cache, keep, added, config_.cache_headroom, model_config_.n_positions);
    }
    rows = std::move(next);
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.prompt_tokens += prompt_tokens;
  stats_.tokens += jobs.size();
}

void Engine::step(std::vector<Row>& rows, KVCache& cache) {
  const torch::Device device = model_->transformer->wte->weight.device();
  const int64_t B = static_cast<int64_t>(rows.size());
  std::vector<int64_t> last(B);
  for (int64_t b = 0; b < B; ++b) last[b] = rows[b].last;
  const torch::Tensor input = torch::tensor(last, torch::kLong).view({B, 1}).to(device);
  const torch::Tensor logits =
      model_->forward(input, torch::ones({B, 1}, torch::kLong).to(device), &cache).select(1, 0).to(torch::kCPU);
  for (int64_t b = 0; b < B; ++b) {
    Row& row = rows[b];
    row.filled += 1;
    const int32_t token = sample_row(logits[b], row.job->request.sampling, row.rng);
    row.generated += 1;
    row.last = token;
    FinishReason finish = FinishReason::kRunning;
    if (is_stop(token, stop_tokens_)) {
      finish = FinishReason::kStop;
    } else if (row.generated >= row.max_new) {
      finish = FinishReason::kLength;
    }
    row.job->on_event({token, finish});
    row.done = finish != FinishReason::kRunning;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.steps += 1;
  stats_.tokens += static_cast<uint64_t>(B);
  stats_.row_steps += static_cast<uint64_t>(B);
}

}  // namespace rlhf::serve

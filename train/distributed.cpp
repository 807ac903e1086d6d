#include "train/distributed.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>

#include "common/error.h"
#include "common/log.h"

namespace rlhf {
namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    fail(ErrorKind::kUsage, "environment variable ", name, "='", v, "' is not an integer");
  }
}

std::string env_str(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

// LibTorch 2.x's bundled Gloo prints "[Gloo] Rank N is connected to ..."
// on every rank while the group forms; ranks other than 0 must log nothing,
// and rank 0 logs the same fact itself. Standard output and error point at
// /dev/null for this object's lifetime; errors still arrive as exceptions.
class QuietStdStreams {
 public:
  QuietStdStreams() {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    const int null_fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null_fd < 0) return;
    saved_out_ = ::dup(STDOUT_FILENO);
    saved_err_ = ::dup(STDERR_FILENO);
    if (saved_out_ >= 0) ::dup2(null_fd, STDOUT_FILENO);
    if (saved_err_ >= 0) ::dup2(null_fd, STDERR_FILENO);
    ::close(null_fd);
  }
  ~QuietStdStreams() {
    std::cout.flush();
    std::cerr.flush();
    std::fflush(nullptr);
    restore(saved_out_, STDOUT_FILENO);
    restore(saved_err_, STDERR_FILENO);
  }
  QuietStdStreams(const QuietStdStreams&) = delete;
  QuietStdStreams& operator=(const QuietStdStreams&) = delete;

 private:
  static void restore(int saved, int fd) {
    if (saved < 0) return;
    ::dup2(saved, fd);
    ::close(saved);
  }

  int saved_out_ = -1;
  int saved_err_ = -1;
};

[[noreturn]] void lost_peer(const std::string& what, const std::string& why) {
  fail(ErrorKind::kNetwork, "distributed ", what, " failed: ", why,
       ". Another rank has probably died or stopped answering; this run stops here. "
       "Restart every rank to resume from the last checkpoint.");
}

void wait_work(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    lost_peer(what, e.what());
  }
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(int rank, int world, const std::string& host, int port, bool agent_store,
                   std::chrono::milliseconds timeout)
      : rank_(rank), world_(world) {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<uint16_t>(port);
    opts.isServer = rank == 0 && !agent_store;  // torchrun's agent may host the store itself
    opts.numWorkers = world;
    opts.waitWorkers = false;
    opts.timeout = timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(host, opts);
    } catch (const std::exception& e) {
      fail(ErrorKind::kNetwork, "rank ", rank, " could not reach the rendezvous store at ", host, ":", port, ": ",
           e.what(), ". Check MASTER_ADDR/MASTER_PORT and that rank 0 is running.");
    }
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("rlhf", store_);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    options->threads = 1;
    try {
      QuietStdStreams quiet;
      group_ = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world, options);
    } catch (const std::exception& e) {
      fail(ErrorKind::kNetwork, "rank ", rank, " could not join the process group of ", world, " ranks: ", e.what());
    }
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }

  void all_reduce_sum(std::vector<torch::Tensor>& tensors) override {
    for (auto& t : tensors) {
      std::vector<at::Tensor> one = {t};
      wait_work(group_->allreduce(one), "all-reduce");
    }
  }

  void broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    c10d::BroadcastOptions o;
    o.rootRank = root;
    for (auto& t : tensors) {
      std::vector<at::Tensor> one = {t};
      wait_work(group_->broadcast(one, o), "broadcast");
    }
  }

  void barrier() override { wait_work(group_->barrier(), "barrier"); }

  struct GlooPending : Pending {
    c10::intrusive_ptr<c10d::Work> work;
    void wait() override { wait_work(work, "gradient all-reduce"); }
  };

  std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& tensor) override {
    std::vector<at::Tensor> one = {tensor};
    auto p = std::make_unique<GlooPending>();
    try {
      p->work = group_->allreduce(one);
    } catch (const std::exception& e) {
      lost_peer("all-reduce", e.what());
    }
    return p;
  }

 private:
  int rank_, world_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group_;
};

}  // namespace

std::shared_ptr<Communicator> make_gloo_communicator(int rank, int world, const std::string& host, int port,
                                                     std::chrono::milliseconds timeout, bool agent_store) {
  return std::make_shared<GlooCommunicator>(rank, world, host, port, agent_store, timeout);
}

DistInfo init_distributed(const DistOptions& options) {
  DistInfo d;
  d.world_size = env_int("WORLD_SIZE", 1);
  d.rank = env_int("RANK", 0);
  d.local_rank = env_int("LOCAL_RANK", d.rank);
  if (d.world_size < 1 || d.rank < 0 || d.rank >= d.world_size) {
    fail(ErrorKind::kUsage, "RANK=", d.rank, " and WORLD_SIZE=", d.world_size, " do not describe a valid run");
  }
  if (d.world_size == 1) return d;
  const std::string host = env_str("MASTER_ADDR", "127.0.0.1");
  const int port = env_int("MASTER_PORT", 29500);
  DistOptions o = options;
  if (const int s = env_int("RLHF_DIST_TIMEOUT_S", 0); s > 0) o.timeout = std::chrono::seconds(s);
  const bool agent_store = env_str("TORCHELASTIC_USE_AGENT_STORE", "") == "True";
  set_log_enabled(d.rank == 0);
  d.comm = make_gloo_communicator(d.rank, d.world_size, host, port, o.timeout, agent_store);
  log_info("distributed: ", d.world_size, " ranks, rendezvous at ", host, ":", port, " (c10d Gloo)");
  return d;
}

double all_reduce_sum(const DistInfo& dist, double value) {
  if (!dist.active()) return value;
  std::vector<torch::Tensor> t = {torch::tensor({value}, torch::kDouble)};
  dist.comm->all_reduce_sum(t);
  return t[0].item<double>();
}

std::vector<double> all_reduce_sum(const DistInfo& dist, std::vector<double> values) {
  if (!dist.active() || values.empty()) return values;
  std::vector<torch::Tensor> t = {torch::tensor(values, torch::kDouble)};
  dist.comm->all_reduce_sum(t);
  for (size_t i = 0; i < values.size(); ++i) values[i] = t[0][static_cast<int64_t>(i)].item<double>();
  return values;
}

void barrier(const DistInfo& dist) {
  if (dist.active()) dist.comm->barrier();
}

void broadcast_parameters(const DistInfo& dist, const std::vector<NamedParameter>& params) {
  std::vector<torch::Tensor> tensors;
  for (const auto& p : params) tensors.push_back(p.tensor);
  broadcast_parameters(dist, tensors);
}

void broadcast_parameters(const DistInfo& dist, const std::vector<torch::Tensor>& tensors) {
  if (!dist.active()) return;
  torch::NoGradGuard no_grad;
  // One flat buffer: few collectives, exact copy.
  std::vector<torch::Tensor> flat = {torch::cat([&] {
    std::vector<torch::Tensor> parts;
    for (const auto& t : tensors) parts.push_back(t.detach().reshape({-1}).to(torch::kFloat));
    return parts;
  }())};
  dist.comm->broadcast(flat, 0);
  int64_t offset = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    torch::Tensor(t).copy_(flat[0].narrow(0, offset, n).view_as(t));
    offset += n;
  }
}

struct GradientSync::Bucket {
  torch::Tensor buffer;        // flat, float
  std::vector<size_t> params;  // indices into params_
  size_t ready = 0;
  std::unique_ptr<Communicator::Pending> pending;
};

GradientSync::GradientSync(const DistInfo& dist, std::vector<NamedParameter> params, double bucket_mb)
    : dist_(dist), params_(std::move(params)) {
  if (!dist_.active()) return;
  // Buckets in reverse parameter order: the backward pass produces the last
  // layers' gradients first, so early buckets can leave early.
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024 / 4));
  bucket_of_.resize(params_.size());
  offset_of_.resize(params_.size());
  int64_t fill = cap;
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t n = params_[k].tensor.numel();
    if (fill + n > cap && !(buckets_.size() > 0 && buckets_.back()->params.empty())) {
      buckets_.push_back(std::make_unique<Bucket>());
      fill = 0;
    }
    bucket_of_[k] = buckets_.size() - 1;
    offset_of_[k] = static_cast<size_t>(fill);
    buckets_.back()->params.push_back(k);
    fill += n;
  }
  for (auto& b : buckets_) {
    int64_t n = 0;
    for (size_t k : b->params) n += params_[k].tensor.numel();
    b->buffer = torch::zeros({n}, params_[0].tensor.options().dtype(torch::kFloat));
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    params_[k].tensor.register_hook([this, k](torch::Tensor grad) {
      if (armed_) on_grad_ready(k, grad);
      return grad;
    });
  }
}

GradientSync::~GradientSync() = default;

void GradientSync::arm() {
  if (!dist_.active()) return;
  armed_ = true;
  next_to_launch_ = 0;
  for (auto& b : buckets_) {
    b->ready = 0;
    b->pending.reset();
  }
}

void GradientSync::on_grad_ready(size_t k, const torch::Tensor& grad) {
  torch::NoGradGuard no_grad;
  Bucket& b = *buckets_[bucket_of_[k]];
  const torch::Tensor& p = params_[k].tensor;
  torch::Tensor slot = b.buffer.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel());
  // The hook sees this backward's gradient; earlier micro-batches' are
  // already in .grad (accumulation happens after the hook).
  if (p.grad().defined()) {
    slot.copy_(p.grad().reshape({-1}));
    slot.add_(grad.reshape({-1}));
  } else {
    slot.copy_(grad.reshape({-1}));
  }
  ++b.ready;
  launch_ready_buckets();
}

void GradientSync::launch_ready_buckets() {
  while (next_to_launch_ < buckets_.size() && buckets_[next_to_launch_]->ready == buckets_[next_to_launch_]->params.size()) {
    Bucket& b = *buckets_[next_to_launch_];
    b.pending = dist_.comm->all_reduce_sum_async(b.buffer);
    ++next_to_launch_;
  }
}

void GradientSync::finish() {
  if (!dist_.active()) return;
  RLHF_CHECK(armed_, "GradientSync::finish() without arm()");
  armed_ = false;
  torch::NoGradGuard no_grad;
  // Parameters that got no gradient this step (unused) contribute zeros.
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = *buckets_[i];
    if (b.ready == b.params.size()) continue;
    for (size_t k : b.params) {
      const torch::Tensor& p = params_[k].tensor;
      torch::Tensor slot = b.buffer.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel());
      if (p.grad().defined()) slot.copy_(p.grad().reshape({-1}));
      else slot.zero_();
    }
    b.ready = b.params.size();
  }
  launch_ready_buckets();
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& b : buckets_) {
    if (b->pending) b->pending->wait();
    b->pending.reset();
  }
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (size_t k = 0; k < params_.size(); ++k) {
    torch::Tensor& p = params_[k].tensor;
    torch::Tensor summed = buckets_[bucket_of_[k]]->buffer.narrow(0, static_cast<int64_t>(offset_of_[k]), p.numel()).view_as(p);
    if (p.grad().defined()) p.mutable_grad().copy_(summed);
    else p.mutable_grad() = summed.clone();
  }
}

double GradientSync::take_wait_seconds() {
  const double s = wait_seconds_;
  wait_seconds_ = 0;
  return s;
}

}  // namespace rlhf

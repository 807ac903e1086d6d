// Data-parallel training on PyTorch's own c10d engine (ProcessGroupGloo, the
// engine under PyTorch DDP). A run is started the way torchrun starts one:
// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in the
// environment, a TCPStore rendezvous on MASTER_ADDR:MASTER_PORT. Without
// them a run is one process and nothing here does any work.
//
//   torchrun --no-python --nproc_per_node=2 build/cli/rlhf pretrain ...
//   for r in 0 1; do RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 rlhf pretrain ... & done
//
// Conventions every training loop follows: each rank computes its share of
// the global loss (already divided by the global normaliser), gradients are
// SUMMED across ranks, parameters are broadcast from rank 0 at the start,
// and only rank 0 writes logs, metrics and checkpoints.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "train/optim.h"

namespace rlhf {

// The process group and its store. Collectives throw rlhf::Error
// (kNetwork) when a peer is lost or does not answer within the timeout.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place, across every rank.
  virtual void all_reduce_sum(std::vector<torch::Tensor>& tensors) = 0;
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int root) = 0;
  virtual void barrier() = 0;
  // Starts a sum all-reduce and returns a handle; wait() finishes it.
  struct Pending {
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  virtual std::unique_ptr<Pending> all_reduce_sum_async(torch::Tensor& tensor) = 0;
};

struct DistInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  std::shared_ptr<Communicator> comm;  // null in a single-process run
  bool is_main() const { return rank == 0; }
  bool active() const { return comm != nullptr && world_size > 1; }
};

struct DistOptions {
  std::chrono::milliseconds timeout = std::chrono::minutes(10);  // collectives and rendezvous
};

// Reads the torchrun environment. Single process when WORLD_SIZE is unset or
// 1. Also silences logs on ranks other than 0. RLHF_DIST_TIMEOUT_S overrides
// the timeout.
DistInfo init_distributed(const DistOptions& options = {});

// A Gloo process group for `rank` of `world`, rendezvous at host:port (rank
// 0 hosts the store). init_distributed() uses it; tests can run ranks as
// threads of one process with it.
std::shared_ptr<Communicator> make_gloo_communicator(int rank, int world, const std::string& host, int port,
                                                     std::chrono::milliseconds timeout, bool agent_store = false);

// Sums of scalars across ranks (identity in a single process).
double all_reduce_sum(const DistInfo& dist, double value);
std::vector<double> all_reduce_sum(const DistInfo& dist, std::vector<double> values);
void barrier(const DistInfo& dist);
// Copies rank 0's parameters and buffers to every rank.
void broadcast_parameters(const DistInfo& dist, const std::vector<torch::Tensor>& tensors);
// The same for a stage's trainable parameters.
void broadcast_parameters(const DistInfo& dist, const std::vector<NamedParameter>& params);

// Sums gradients across ranks in buckets of about `bucket_mb`, launching each
// bucket's all-reduce while the backward pass is still running (hooks fire as
// gradients become ready, buckets go out in a fixed order so every rank issues
// the same collectives). Use: arm() before the backward of the last
// micro-batch of a step, finish() after it.
class GradientSync {
 public:
  GradientSync(const DistInfo& dist, std::vector<NamedParameter> params, double bucket_mb = 4.0);
  ~GradientSync();
  GradientSync(const GradientSync&) = delete;
  GradientSync& operator=(const GradientSync&) = delete;

  void arm();
  // Waits for every bucket and writes the summed gradients back.
  void finish();
  // Seconds spent waiting for communication in finish() since the last call.
  double take_wait_seconds();

 private:
  struct Bucket;
  void on_grad_ready(size_t param_index, const torch::Tensor& grad);
  void launch_ready_buckets();

  DistInfo dist_;
  std::vector<NamedParameter> params_;
  std::vector<std::unique_ptr<Bucket>> buckets_;
  std::vector<size_t> bucket_of_, offset_of_;
  size_t next_to_launch_ = 0;
  bool armed_ = false;
  double wait_seconds_ = 0;
};

}  // namespace rlhf

// Token files for pretraining: the corpus encoded once into flat binary
// arrays (uint16 when the vocabulary fits, else uint32), a train and a
// validation file plus meta.json, memory-mapped while training.
//
// Batches are windows of T+1 tokens (inputs and next-token targets). Each
// epoch visits every window once in a seeded random order, from a seeded
// random offset; sample k of the run is a pure function of (seed, k), so a
// resumed run sees the same data, and ranks take disjoint slices of each
// step's samples.
#pragma once

#include <torch/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/fs.h"
#include "train/data_order.h"

namespace rlhf {

struct TokenFileMeta {
  int64_t num_tokens = 0;
  int bytes_per_token = 2;
};

// Writes `tokens` as a token file (atomic).
void write_token_file(const std::string& path, const std::vector<int32_t>& tokens, int vocab_size);

class TokenFile {
 public:
  explicit TokenFile(const std::string& path, int vocab_size);
  int64_t size() const { return size_; }
  int32_t at(int64_t i) const;
  // Copies tokens [start, start + n) into out (int64).
  void copy(int64_t start, int64_t n, int64_t* out) const;

 private:
  MappedFile file_;
  int bytes_per_token_;
  int64_t size_;
};

// Non-overlapping windows of `block + 1` tokens, visited in an EpochOrder,
// starting from a seeded offset in [0, block) that changes every epoch.
class WindowSampler {
 public:
  WindowSampler(int64_t num_tokens, int64_t block, uint64_t seed);
  int64_t windows_per_epoch() const { return order_.size(); }
  // Start offset of global sample k.
  int64_t start(int64_t k);

 private:
  int64_t block_;
  EpochOrder order_;
};

// Inputs and targets [B, T] for the windows starting at `starts`.
std::pair<torch::Tensor, torch::Tensor> make_batch(const TokenFile& file,
                                                   const std::vector<int64_t>& starts,
                                                   int64_t block);

}  // namespace rlhf

// Which example a training run reads at each step. Sample k of a run (k =
// step * global_batch + position) maps to an example through a seeded
// permutation per epoch, so every epoch visits each example once, the order
// is a pure function of (seed, k) — a resumed run reads exactly what the
// uninterrupted run would have — and ranks take disjoint slices of a step.
#pragma once

#include <cstdint>
#include <vector>

namespace rlhf {

class EpochOrder {
 public:
  EpochOrder(int64_t num_items, uint64_t seed);
  int64_t size() const { return n_; }
  // Example index of global sample k.
  int64_t at(int64_t k);
  int64_t epoch_of(int64_t k) const { return k / n_; }
  uint64_t seed() const { return seed_; }

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

// EpochOrder with batches of similar length (as Hugging Face's
// group_by_length): each epoch's permutation is cut into chunks of
// `group_factor` global batches, each chunk is sorted by length, and the
// batches of a chunk are shuffled. Padded batches then waste little compute;
// still a pure function of (seed, k).
class LengthGroupedOrder {
 public:
  LengthGroupedOrder(std::vector<int64_t> lengths, int64_t global_batch, uint64_t seed, int group_factor = 16);
  int64_t size() const { return static_cast<int64_t>(lengths_.size()); }
  int64_t at(int64_t k);

 private:
  std::vector<int64_t> lengths_;
  int64_t global_batch_;
  int group_factor_;
  EpochOrder base_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

// The global sample indices a rank reads for micro-batch `micro` of `step`:
// the step's `global_batch` samples are split into contiguous rank slices,
// each cut into micro-batches of `micro_batch`.
std::vector<int64_t> micro_batch_samples(int64_t step, int micro, int micro_batch, int grad_accum, int rank,
                                         int world_size);

}  // namespace rlhf

#include "train/data_order.h"

#include "common/error.h"
#include "common/hash.h"

#include <algorithm>

namespace rlhf {

EpochOrder::EpochOrder(int64_t num_items, uint64_t seed) : n_(num_items), seed_(seed) {
  RLHF_CHECK(num_items > 0, "an epoch needs at least one item");
}

int64_t EpochOrder::at(int64_t k) {
  const int64_t epoch = k / n_;
  if (epoch != cached_epoch_) {
    SplitMix rng(mix_seed({seed_, static_cast<uint64_t>(epoch)}));
    order_.resize(n_);
    for (int64_t i = 0; i < n_; ++i) order_[i] = i;
    for (int64_t i = n_ - 1; i > 0; --i) std::swap(order_[i], order_[rng.below(static_cast<uint64_t>(i + 1))]);
    cached_epoch_ = epoch;
  }
  return order_[k % n_];
}

LengthGroupedOrder::LengthGroupedOrder(std::vector<int64_t> lengths, int64_t global_batch, uint64_t seed,
                                       int group_factor)
    : lengths_(std::move(lengths)),
      global_batch_(std::max<int64_t>(1, global_batch)),
      group_factor_(std::max(1, group_factor)),
      base_(static_cast<int64_t>(lengths_.size()), seed) {}

int64_t LengthGroupedOrder::at(int64_t k) {
  const int64_t n = size();
  const int64_t epoch = k / n;
  if (epoch != cached_epoch_) {
    order_.resize(n);
    for (int64_t i = 0; i < n; ++i) order_[i] = base_.at(epoch * n + i);
    const int64_t chunk = global_batch_ * group_factor_;
    SplitMix rng(mix_seed({base_.seed(), static_cast<uint64_t>(epoch), 0x6c656eu}));
    for (int64_t start = 0; start < n; start += chunk) {
      const int64_t end = std::min(n, start + chunk);
      std::stable_sort(order_.begin() + start, order_.begin() + end,
                       [&](int64_t a, int64_t b) { return lengths_[a] > lengths_[b]; });
      // Shuffle whole batches inside the chunk.
      const int64_t batches = (end - start) / global_batch_;
      for (int64_t i = batches - 1; i > 0; --i) {
        const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
        std::swap_ranges(order_.begin() + start + i * global_batch_, order_.begin() + start + (i + 1) * global_batch_,
                         order_.begin() + start + j * global_batch_);
      }
    }
    cached_epoch_ = epoch;
  }
  return order_[k % n];
}

std::vector<int64_t> micro_batch_samples(int64_t step, int micro, int micro_batch, int grad_accum, int rank,
                                         int world_size) {
  const int64_t per_rank = static_cast<int64_t>(micro_batch) * grad_accum;
  const int64_t first = step * per_rank * world_size + rank * per_rank + static_cast<int64_t>(micro) * micro_batch;
  std::vector<int64_t> out(micro_batch);
  for (int i = 0; i < micro_batch; ++i) out[i] = first + i;
  return out;
}

}  // namespace rlhf

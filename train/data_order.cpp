#include "train/data_order.h"

#include "common/error.h"
#include "common/hash.h"

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

std::vector<int64_t> micro_batch_samples(int64_t step, int micro, int micro_batch, int grad_accum, int rank,
                                         int world_size) {
  const int64_t per_rank = static_cast<int64_t>(micro_batch) * grad_accum;
  const int64_t first = step * per_rank * world_size + rank * per_rank + static_cast<int64_t>(micro) * micro_batch;
  std::vector<int64_t> out(micro_batch);
  for (int i = 0; i < micro_batch; ++i) out[i] = first + i;
  return out;
}

}  // namespace rlhf

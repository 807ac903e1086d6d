#include "pretrain/token_data.h"

#include <cstring>

#include "common/error.h"
#include "common/hash.h"

namespace rlhf {

void write_token_file(const std::string& path, const std::vector<int32_t>& tokens, int vocab_size) {
  AtomicFileWriter out(path);
  if (vocab_size <= 65536) {
    std::vector<uint16_t> buf(tokens.begin(), tokens.end());
    out.write(buf.data(), buf.size() * sizeof(uint16_t));
  } else {
    out.write(tokens.data(), tokens.size() * sizeof(int32_t));
  }
  out.commit();
}

TokenFile::TokenFile(const std::string& path, int vocab_size)
    : file_(path), bytes_per_token_(vocab_size <= 65536 ? 2 : 4) {
  if (file_.size() % bytes_per_token_ != 0) {
    fail(ErrorKind::kCorrupt, path, ": size ", file_.size(), " is not a multiple of ",
         bytes_per_token_, " bytes; delete the run's data/ folder to rebuild it");
  }
  size_ = static_cast<int64_t>(file_.size() / bytes_per_token_);
}

int32_t TokenFile::at(int64_t i) const {
  if (bytes_per_token_ == 2) {
    uint16_t v;
    std::memcpy(&v, file_.data() + i * 2, 2);
    return v;
  }
  int32_t v;
  std::memcpy(&v, file_.data() + i * 4, 4);
  return v;
}

void TokenFile::copy(int64_t start, int64_t n, int64_t* out) const {
  RLHF_CHECK(start >= 0 && start + n <= size_, "window [", start, ", ", start + n, ") outside ", size_);
  if (bytes_per_token_ == 2) {
    const auto* p = reinterpret_cast<const uint16_t*>(file_.data()) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    const auto* p = reinterpret_cast<const int32_t*>(file_.data()) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  }
}

namespace {
// Room for a shift of up to block-1 tokens plus the extra target token.
int64_t window_count(int64_t num_tokens, int64_t block) {
  const int64_t n = (num_tokens - block) / block;
  if (n < 1) {
    fail(ErrorKind::kData, "the training data has ", num_tokens, " tokens, fewer than two windows of ", block,
         "; use a larger corpus or a smaller model.n_positions");
  }
  return n;
}
}  // namespace

WindowSampler::WindowSampler(int64_t num_tokens, int64_t block, uint64_t seed)
    : block_(block), order_(window_count(num_tokens, block), seed) {}

int64_t WindowSampler::start(int64_t k) {
  const uint64_t epoch = static_cast<uint64_t>(order_.epoch_of(k));
  const int64_t shift = static_cast<int64_t>(splitmix64(mix_seed({order_.seed(), epoch, 0x5eedu})) %
                                             static_cast<uint64_t>(block_));
  return shift + order_.at(k) * block_;
}

std::pair<torch::Tensor, torch::Tensor> make_batch(const TokenFile& file,
                                                   const std::vector<int64_t>& starts, int64_t block) {
  const auto B = static_cast<int64_t>(starts.size());
  torch::Tensor window = torch::empty({B, block + 1}, torch::kLong);
  for (int64_t b = 0; b < B; ++b) file.copy(starts[b], block + 1, window[b].data_ptr<int64_t>());
  return {window.narrow(1, 0, block), window.narrow(1, 1, block)};
}

}  // namespace rlhf

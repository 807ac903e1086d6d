// Splitting a loop over LibTorch's intra-op threads from our own kernels.
#pragma once

#include <cstdint>
#include <functional>

namespace rlhf {

// at::parallel_for(begin, end, grain, f), compiled where it actually runs in
// parallel. at::parallel_for is a header template: with LibTorch's OpenMP
// backend (Debian's 1.13 and PyPI's 2.x wheels) it splits the range only in
// a translation unit compiled with -fopenmp and otherwise runs f(begin, end)
// on the calling thread, while the other threads spin. parallel.cpp is that
// one translation unit, linked to the OpenMP runtime LibTorch itself uses, so
// the threads are LibTorch's own (torch::set_num_threads counts them).
// Attention over the KV cache had run on one thread: decoding at 64 rows
// went from ~2,450 to ~3,100 tokens/s with this (docs/performance.md).
void parallel_rows(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f);

}  // namespace rlhf

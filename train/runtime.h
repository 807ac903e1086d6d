// LibTorch process settings chosen by measurement (docs/performance.md).
#pragma once

#include <torch/types.h>

#include <string>

namespace rlhf {

// Sets LibTorch's intra-op threads (0 = every CPU this process may use; the
// default is 1 here) and a single inter-op thread. Returns the count used.
int set_torch_threads(int threads);

// "cpu", "cuda", "cuda:1" or "auto" (CUDA when available).
torch::Device parse_device(const std::string& name);

}  // namespace rlhf

// LibTorch process settings chosen by measurement (docs/performance.md).
#pragma once

#include <torch/types.h>

#include <string>

namespace rlhf {

// Sets LibTorch's intra-op threads (0 = every CPU this process may use; the
// default is 1 here) and a single inter-op thread. Returns the count used.
int set_torch_threads(int threads);

// The BLAS this LibTorch was built against, as its build configuration says:
// "generic" (Debian's 1.13: the system's libblas.so.3, which scripts/setup.sh
// points at OpenBLAS, so OPENBLAS_CORETYPE applies), "mkl" (PyPI's 2.x
// wheels: Intel MKL inside libtorch_cpu), "open" (OpenBLAS linked in), or
// "unknown".
std::string torch_blas();

// "cpu", "cuda", "cuda:1" or "auto" (CUDA when available).
torch::Device parse_device(const std::string& name);

// The GEMM dtype of a training precision setting: "fp32" (nullopt: as the
// weights are) or "bf16" (mixed precision, fp32 weights and optimiser).
// Anything else is a config error naming `key`.
c10::optional<torch::ScalarType> parse_precision(const std::string& precision, const std::string& key);

}  // namespace rlhf

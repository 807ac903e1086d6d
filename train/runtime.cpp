#include "train/runtime.h"

#include <algorithm>
#include <cstdlib>

#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <torch/cuda.h>

#include "common/error.h"
#include "common/runtime.h"

namespace rlhf {

int set_torch_threads(int threads) {
  // Several ranks on one host (torchrun sets LOCAL_WORLD_SIZE) share its cores.
  const char* local = std::getenv("LOCAL_WORLD_SIZE");
  const int per_host = local != nullptr ? std::max(1, std::atoi(local)) : 1;
  const int n = threads > 0 ? threads : std::max(1, available_cpus() / per_host);
  at::set_num_threads(n);
  try {
    at::set_num_interop_threads(1);
  } catch (const std::exception&) {
    // Already set (it can be set once per process); harmless.
  }
  return n;
}

std::string torch_blas() {
  const std::string config = at::show_config();
  const std::string key = "BLAS_INFO=";
  const auto at = config.find(key);
  if (at == std::string::npos) return "unknown";
  const auto begin = at + key.size();
  const auto end = config.find_first_of(", \n", begin);
  return config.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

c10::optional<torch::ScalarType> parse_precision(const std::string& precision, const std::string& key) {
  if (precision == "fp32") return c10::nullopt;
  if (precision == "bf16") return torch::kBFloat16;
  fail(ErrorKind::kConfig, key, " = '", precision,
       "': use \"fp32\" or \"bf16\" (mixed precision: bf16 GEMMs, fp32 weights; faster on CPUs with "
       "AVX512-BF16 or AMX and on GPUs, slower elsewhere)");
}

torch::Device parse_device(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  try {
    torch::Device d(name);
    if (d.is_cuda() && !torch::cuda::is_available()) {
      fail(ErrorKind::kConfig, "device '", name, "' was asked for but CUDA is not available; use device = \"cpu\"");
    }
    return d;
  } catch (const c10::Error&) {
    fail(ErrorKind::kConfig, "unknown device '", name, "'; use \"cpu\", \"cuda\", \"cuda:N\" or \"auto\"");
  }
}

}  // namespace rlhf

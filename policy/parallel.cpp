#include "policy/parallel.h"

#include <ATen/Config.h>
#include <ATen/Parallel.h>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "policy/parallel.cpp must be compiled with -fopenmp (policy/CMakeLists.txt): without it at::parallel_for is serial"
#endif

namespace rlhf {

void parallel_rows(int64_t begin, int64_t end, int64_t grain, const std::function<void(int64_t, int64_t)>& f) {
  at::parallel_for(begin, end, grain, f);
}

}  // namespace rlhf

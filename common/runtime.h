// Process start-up that must happen before any numeric library loads.
#pragma once

#include <string>

namespace rlhf {

// Settings that the C library and OpenBLAS read once, at start-up, chosen by
// measurement (docs/performance.md). Call first thing in main(); when one of
// them is missing this sets it and re-executes the program so that it takes
// effect:
// - OPENBLAS_CORETYPE=SkylakeX on AVX-512 CPUs: OpenBLAS 0.3.21 misdetects
//   some of them (measured: ~38 instead of ~300 GFLOP/s).
// - glibc.malloc.hugetlb=1 in GLIBC_TUNABLES while transparent huge pages are
//   in `madvise` mode: glibc's malloc then advises huge pages for its large
//   mappings, so LibTorch's tensors stop living on 4 KB pages (2048^2 GEMM
//   ~215 -> ~330 GFLOP/s here). RLHF_HUGE_PAGES=0 turns this one off.
// Values already set are respected; RLHF_NO_REEXEC=1 disables the re-exec.
void ensure_process_environment(int argc, char** argv);

// What ensure_process_environment left in place, for benchmark reports:
// e.g. "OPENBLAS_CORETYPE=SkylakeX, malloc huge pages on (THP madvise)".
std::string process_environment_summary();

// The CPU as /proc/cpuinfo names it, with the vector units the numeric
// libraries pick their kernels by: "AMD EPYC (family 25, model 1; AVX2)".
// Two machines whose descriptions differ can round differently, so the same
// seeds can give other figures (docs/results.md); "unknown CPU" off Linux.
std::string cpu_description();

// Whether this CPU multiplies bfloat16 natively (AVX512-BF16, which every
// AMX CPU has too): there bf16 products run several times faster than fp32;
// elsewhere they are emulated, and far slower (docs/performance.md).
bool cpu_has_native_bf16();

// Number of CPUs this process may run on (affinity-aware).
int available_cpus();

}  // namespace rlhf

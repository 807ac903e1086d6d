// Process start-up that must happen before any numeric library loads.
#pragma once

namespace rlhf {

// OpenBLAS reads OPENBLAS_CORETYPE once, when it loads, and 0.3.21
// misdetects some AVX-512 CPUs (measured: ~38 instead of ~300 GFLOP/s).
// When the variable is unset and the CPU has AVX-512, this sets it to
// SkylakeX and re-executes the program, so the setting is in place before the
// library loads. A value already set is respected; RLHF_NO_REEXEC=1 disables
// the re-exec. Call first thing in main().
void ensure_blas_environment(int argc, char** argv);

// Number of CPUs this process may run on (affinity-aware).
int available_cpus();

}  // namespace rlhf

#include "common/runtime.h"

#include <sched.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

namespace rlhf {
namespace {

bool env_is(const char* name, const char* value) {
  const char* v = std::getenv(name);
  return v != nullptr && std::strcmp(v, value) == 0;
}

// The bracketed mode of /sys/kernel/mm/transparent_hugepage/enabled:
// "always", "madvise", "never", or "" when the kernel has no THP.
std::string thp_mode() {
  std::ifstream in("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string line;
  std::getline(in, line);
  const size_t open = line.find('['), close = line.find(']');
  if (open == std::string::npos || close == std::string::npos || close < open) return "";
  return line.substr(open + 1, close - open - 1);
}

bool tunables_set_hugetlb() {
  const char* t = std::getenv("GLIBC_TUNABLES");
  return t != nullptr && std::strstr(t, "glibc.malloc.hugetlb") != nullptr;
}

bool wants_avx512_coretype() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

}  // namespace

void ensure_process_environment(int argc, char** argv) {
  (void)argc;
  if (env_is("RLHF_NO_REEXEC", "1")) return;
  bool changed = false;
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr && wants_avx512_coretype()) {
    ::setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    changed = true;
  }
  // With THP "always" the kernel already backs large mappings with huge
  // pages; with "never" advice does nothing.
  if (!env_is("RLHF_HUGE_PAGES", "0") && !tunables_set_hugetlb() && thp_mode() == "madvise") {
    const char* old = std::getenv("GLIBC_TUNABLES");
    std::string tunables = old != nullptr && old[0] != '\0' ? std::string(old) + ":" : std::string();
    tunables += "glibc.malloc.hugetlb=1";
    ::setenv("GLIBC_TUNABLES", tunables.c_str(), 1);
    changed = true;
  }
  if (changed) ::execv("/proc/self/exe", argv);
  // If exec fails we carry on: slower, same results.
}

std::string process_environment_summary() {
  const char* core = std::getenv("OPENBLAS_CORETYPE");
  const char* t = std::getenv("GLIBC_TUNABLES");
  const bool hugetlb = t != nullptr && std::strstr(t, "glibc.malloc.hugetlb=1") != nullptr;
  const std::string mode = thp_mode();
  return std::string("OPENBLAS_CORETYPE=") + (core ? core : "(auto)") + ", malloc huge pages " +
         (hugetlb || mode == "always" ? "on" : "off") + " (THP " + (mode.empty() ? "absent" : mode) + ")";
}

std::string cpu_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, name, family, model, flags;
  auto value = [&line] {
    const size_t colon = line.find(':');
    return colon == std::string::npos || colon + 2 > line.size() ? std::string() : line.substr(colon + 2);
  };
  while (std::getline(in, line) && !line.empty()) {  // the first processor's block
    if (line.rfind("model name", 0) == 0) name = value();
    else if (line.rfind("cpu family", 0) == 0) family = value();
    else if (line.rfind("model\t", 0) == 0) model = value();
    else if (line.rfind("flags", 0) == 0) flags = " " + value() + " ";
  }
  if (name.empty()) return "unknown CPU";
  auto has = [&flags](const char* flag) { return flags.find(" " + std::string(flag) + " ") != std::string::npos; };
  const char* vector = has("avx512_bf16") ? "AVX-512 BF16" : has("avx512f") ? "AVX-512" : has("avx2") ? "AVX2" : "no AVX2";
  return name + " (family " + family + ", model " + model + "; " + vector + ")";
}

bool cpu_has_native_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

int available_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? static_cast<int>(n) : 1;
}

}  // namespace rlhf

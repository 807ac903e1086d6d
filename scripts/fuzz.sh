#!/usr/bin/env bash
# Runs every libFuzzer harness (fuzz/) for a set time, two at a time, and
# prints executions, corpus size and coverage per harness.
#
#   scripts/fuzz.sh                 # 600 s each
#   FUZZ_SECONDS=60 scripts/fuzz.sh fuzz_jsonl fuzz_tokenizer
#
# Builds build-fuzz/ with clang (installed here if missing: clang-14 and its
# libFuzzer runtime). Each harness starts from its seeds in fuzz/corpus/<name>
# and grows a working corpus in .cache/fuzz-corpus/<name> (kept between runs,
# not committed). A crash, hang or sanitizer report leaves its input in
# fuzz/crashes/<name>/: fix the bug, then move the input into
# fuzz/corpus/<name>/, where the sanitizer build replays it as a test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_EACH="${FUZZ_SECONDS:-600}"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v clang++-14 >/dev/null || [ ! -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ]; then
  echo "== installing clang-14 and libFuzzer"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang-14 libclang-rt-14-dev
fi
export CCACHE_DIR="${CCACHE_DIR:-$ROOT/.cache/ccache}"
cmake -S . -B build-fuzz -G Ninja -DRLHF_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
cmake --build build-fuzz -j "${RLHF_BUILD_JOBS:-2}"

if [ $# -gt 0 ]; then names=("$@"); else names=($(ls fuzz/corpus)); fi
mkdir -p .cache/fuzz-logs
run_one() {
  local name="$1" work=".cache/fuzz-corpus/$1" crashes="fuzz/crashes/$1/"
  mkdir -p "$work" "$crashes"
  local started=$SECONDS
  # -timeout: an input running over 10 s is a hang; -rss_limit_mb: memory blow-ups are bugs too.
  if ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     "build-fuzz/fuzz/$name" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$crashes" "$work" "fuzz/corpus/$name" >".cache/fuzz-logs/$name.log" 2>&1; then
    status=ok
  else
    status="FAILED (see .cache/fuzz-logs/$name.log and $crashes)"
  fi
  local execs cov corpus ran=$((SECONDS - started))
  execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' ".cache/fuzz-logs/$name.log" | awk '{print $2}')
  cov=$(grep -E '^#[0-9]+' ".cache/fuzz-logs/$name.log" | grep -o 'cov: [0-9]*' | tail -1 | awk '{print $2}')
  corpus=$(ls "$work" | wc -l)
  rmdir "$crashes" 2>/dev/null || true
  printf '%-26s %5ss  execs %10s  corpus %6s  cov %6s  %s\n' "$name" "$ran" "${execs:-?}" "$corpus" "${cov:-?}" "$status"
}
# Two at a time (one per core here).
pids=()
for name in "${names[@]}"; do
  run_one "$name" &
  pids+=($!)
  if [ ${#pids[@]} -ge "${FUZZ_JOBS:-2}" ]; then wait "${pids[0]}"; pids=("${pids[@]:1}"); fi
done
wait

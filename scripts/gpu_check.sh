#!/usr/bin/env bash
# The GPU check of docs/performance.md, for a machine with an NVIDIA GPU and
# PyTorch's wheel (`python3 -c "import torch"` works) but none of our Debian
# packages: builds the training core against that wheel's LibTorch with
# CUDA, runs bench_model on CUDA (GPT-2 124M, fp32 and bf16, against the
# GPU's measured GEMM rates and read bandwidth), and the CI-sized pipeline
# with every training stage on CUDA (PPO, DPO, GRPO and RLOO included).
#
#   scripts/gpu_check.sh bundle DEPS     # here (Debian, after scripts/setup.sh): the
#                                        # headers and static libraries the core needs
#   scripts/gpu_check.sh run OUT DEPS    # there: build, benchmark, pipeline; logs in OUT
#
# DEPS holds include/ (nlohmann/json, toml++, CLI11, pcre2.h, sqlite3.h) and
# lib/ (libpcre2-8.a, libsqlite3.a), a few MB; the build finds them without
# pkg-config (cmake/c_libraries.cmake). Set RLHF_GPU_BIN to a folder holding
# bench_model and rlhf built elsewhere to skip the build.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode=${1:-}

if [ "$mode" = bundle ]; then
  deps=${2:?usage: scripts/gpu_check.sh bundle DEPS}
  set -e
  mkdir -p "$deps/include" "$deps/lib"
  for h in nlohmann toml++ CLI pcre2.h sqlite3.h; do cp -r "/usr/include/$h" "$deps/include/"; done
  for l in libpcre2-8.a libsqlite3.a; do cp "/usr/lib/x86_64-linux-gnu/$l" "$deps/lib/"; done
  du -sh "$deps"
  exit 0
fi
[ "$mode" = run ] || { echo "usage: scripts/gpu_check.sh bundle DEPS | run OUT DEPS" >&2; exit 2; }
out=$(mkdir -p "$2" && cd "$2" && pwd)
deps=$(cd "${3:?usage: scripts/gpu_check.sh run OUT DEPS}" && pwd)
cd "$ROOT"

torch_dir=$(python3 -c "import os, torch; print(os.path.dirname(torch.__file__))") || {
  echo "no PyTorch here: python3 -c 'import torch' failed" >&2; exit 1; }
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
  nproc; g++ --version | head -1; cmake --version | head -1
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

bin=${RLHF_GPU_BIN:-}
if [ -z "$bin" ]; then
  start=$(date +%s)
  build=build-gpu
  # The wheel's own CUDA libraries (nvidia/*/lib beside torch) are found
  # through torch_wheel.cmake's rpath.
  if cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DRLHF_CORE_ONLY=ON -DRLHF_BUILD_TESTS=OFF \
      -DRLHF_TORCH_WHEEL="$torch_dir" -DRLHF_TORCH_WHEEL_CUDA=ON -DCMAKE_PREFIX_PATH="$deps" \
      "-DCMAKE_CXX_FLAGS=-isystem $deps/include" > "$out/build.log" 2>&1 &&
     cmake --build "$build" -j "$(nproc)" --target bench_model rlhf >> "$out/build.log" 2>&1; then
    echo "build: $(( $(date +%s) - start )) s on $(nproc) cores"
    bin=$build/bin
    mkdir -p "$bin" && cp "$build/bench/bench_model" "$build/cli/rlhf" "$bin/"
  else
    echo "build failed after $(( $(date +%s) - start )) s; the end of $out/build.log:"
    grep -m 20 -E "error|Error" "$out/build.log"
    exit 1
  fi
fi

# The benchmark: GPT-2 124M on CUDA, batch 16 x 1024 tokens.
"$bin/bench_model" --device cuda --model gpt2 --batch 16 --steps 8 > "$out/bench_gpt2.log" 2>&1
echo "bench_model rc=$?"
cat "$out/bench_gpt2.log"

# The CI pipeline with every training stage on CUDA, and DPO, GRPO and RLOO
# at CI sizes beside PPO.
start=$(date +%s)
"$bin/rlhf" pipeline --config configs/ci.toml --out_dir=runs/gpu-ci --device=cuda \
  --stages=pretrain,sft,candidates,label,rm,ppo,dpo,grpo,rloo,compare \
  --dpo.train.max_steps=10 --grpo.train.iterations=3 --rloo.train.iterations=3 \
  --grpo.rollout.max_new_tokens=32 --rloo.rollout.max_new_tokens=32 \
  --grpo.validation.max_prompts=16 --rloo.validation.max_prompts=16 \
  --grpo.validation.max_new_tokens=32 --rloo.validation.max_new_tokens=32 > "$out/pipeline.log" 2>&1
rc=$?
echo "pipeline rc=$rc in $(( $(date +%s) - start )) s"
tail -n 40 "$out/pipeline.log"
[ -f runs/gpu-ci/report.md ] && cp runs/gpu-ci/report.md "$out/report.md"
exit $rc

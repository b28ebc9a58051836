#!/usr/bin/env bash
# The whole GPU comparison, JAX against PyTorch eager (inference and train step; bisenetv1_r18,
# bisenetv1_x39, bisenetv2; float32 and bfloat16), in under 8 minutes on one NVIDIA H200.
#
#   bash scripts/gpu_benchmark.sh [--quick] [RESULTS_DIR] [more options of scripts/gpu_benchmark.py]
#
# RESULTS_DIR defaults to $OUT (the device machine's result folder), else results/gpu. It gets
# gpu_benchmark.json, gpu_benchmark.md (the table, also printed) and gpu_benchmark.log (everything
# printed).
#
# The GPU machine's Python has jax (CUDA), flax, optax, orbax-checkpoint and torch but not grain,
# ml-collections, tensorboardX or array-record: fetch those wheels beforehand on a machine with
# network (bash scripts/fetch_gpu_wheels.sh, into .whl/) and carry .whl along; this script installs
# them into /tmp/site when they are missing and puts the repository on PYTHONPATH (no pip install of
# the project).
#
# --quick: tiny sizes, no warm-up, 1 iteration, JAX and PyTorch forced onto the CPU: checks the whole
# path anywhere, in a few minutes on 2 CPUs (run it under nice on a shared machine).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
QUICK=()
if [[ "${1:-}" == "--quick" ]]; then
  QUICK=(--quick)
  shift
fi
RESULTS="${OUT:-$REPO/results/gpu}"
if [[ $# -gt 0 && "$1" != -* ]]; then
  RESULTS="$1"
  shift
fi
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_benchmark.log"
T0=$(date +%s)

TIMEOUT="${GPU_BENCHMARK_TIMEOUT:-465}"
if [[ ${#QUICK[@]} -gt 0 ]]; then
  export JAX_PLATFORMS=cpu CUDA_VISIBLE_DEVICES=""
  TIMEOUT="${GPU_BENCHMARK_TIMEOUT:-0}"  # no time limit: a CPU's compiles take minutes
fi

# The packages the GPU image lacks, from the carried wheels (only when they are missing).
if ! "$PYTHON" -c "import grain, ml_collections, tensorboardX, array_record, portpicker" 2>/dev/null; then
  if ! compgen -G "$REPO/.whl/*.whl" >/dev/null; then
    echo "error: grain/ml-collections/tensorboardX/array-record are missing and $REPO/.whl has no wheels:" \
         "run scripts/fetch_gpu_wheels.sh where pip can reach PyPI and carry .whl" >&2
    exit 2
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$REPO"/.whl/*.whl || exit 2
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# JAX takes 75 % of the GPU's memory at start by default; leave PyTorch, in the same process, half.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"
# A compilation cache of this run only: the FLOPs count compiles the timed forward again (a hit then);
# every compile time reported is a first compile.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$(mktemp -d /tmp/bisenet_jax_cache.XXXXXX)}"
echo "setup: $(( $(date +%s) - T0 )) s; python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])');" \
     "PYTHONPATH=$PYTHONPATH; results in $RESULTS" | tee "$LOG"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm \
  --format=csv,noheader 2>&1 | tee -a "$LOG"

# A hard stop inside the 8 minutes (the Python side starts no item after --budget, 430 s); 0: none.
timeout --signal=INT --kill-after=10 "$TIMEOUT" \
  "$PYTHON" "$REPO/scripts/gpu_benchmark.py" "${QUICK[@]}" "$RESULTS" "$@" 2>&1 | tee -a "$LOG"
STATUS=${PIPESTATUS[0]}
echo "gpu_benchmark.sh: exit status $STATUS, $(( $(date +%s) - T0 )) s in all" | tee -a "$LOG"
exit "$STATUS"

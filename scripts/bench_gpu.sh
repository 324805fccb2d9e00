#!/usr/bin/env bash
# The GPU benchmark on a machine that has torch and nothing to download from (benchmarks/bench_gpu.py): installs
# the wheelhouse that scripts/gpu_wheelhouse.py built (carried here with the checkout) for the python that has
# torch, then runs the benchmark from this checkout. Arguments go to bench_gpu.py (e.g. --budget-s 480).
# Usage: bash scripts/bench_gpu.sh [ARGS...]; PYTHON (default python3), WHEELHOUSE and GPU_SITE choose the rest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WHEELHOUSE="${WHEELHOUSE:-$ROOT/wheelhouse}"
GPU_SITE="${GPU_SITE:-$ROOT/.gpu-site}"

"$PYTHON" -c 'import torch' 2>/dev/null \
    || { echo "$PYTHON has no torch: set PYTHON to the python that has the machine's (CUDA) torch" >&2; exit 1; }
[ -f "$WHEELHOUSE/manifest.json" ] \
    || { echo "no wheelhouse at $WHEELHOUSE: make it where swarmnode is installed (python scripts/gpu_wheelhouse.py build)" >&2; exit 1; }
"$PYTHON" "$ROOT/scripts/gpu_wheelhouse.py" install --wheelhouse "$WHEELHOUSE" --target "$GPU_SITE"
cd "$ROOT"
# the checkout's swarmnode first, then the wheelhouse's packages, then the machine's (torch); nothing from a hub
export PYTHONPATH="$ROOT:$GPU_SITE" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/bench_gpu.py "$@"

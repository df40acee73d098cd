#!/usr/bin/env bash
# One prepared GPU run (e.g. through the device tool): installs the project into a venv if needed, then
# measures training and decoding speed and the 5,000-image decode+score time. Results land in
# benchmarks/results/bench_gpu.json (and $OUT if set).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 ZOO_DISABLE_PLUGIN_AUTOLOAD=1
PY=${PY:-python3}
if ! $PY -c "import zoo" 2>/dev/null; then
  $PY -m pip install -q --no-deps -e . || { echo "install caption-zoo first (pip install -e .)"; exit 2; }
fi
nvidia-smi --query-gpu=name,memory.total --format=csv || true
$PY benchmarks/bench_gpu.py "$@"
$PY benchmarks/bench_beam_search.py
if [ -n "${OUT:-}" ]; then cp benchmarks/results/bench_gpu.json benchmarks/results/bench_beam_search.json "$OUT"/; fi

"""Run every CPU benchmark in turn (``make bench``); each prints its ratio and writes benchmarks/results/.
The GPU figures come from ``benchmarks/gpu.sh`` on a machine with CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_cider.py", "bench_beam_search.py", "bench_teacher_forcing.py", "bench_feature_cache.py", "bench_memory.py",
           "bench_scst.py", "bench_threads.py"]

if __name__ == "__main__":
    failed = []
    for script in SCRIPTS:
        print(f"== {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script), *sys.argv[1:]]).returncode:
            failed.append(script)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")

"""Start-up time: `xhuma serve` with no configuration at all, from process start to GET /health/ready = 200.

Each run starts in a fresh empty directory (so the SQLite audit file is created and migrated every time) with no
XHUMA_* variable set: the embedded defaults, in-process NHS simulator included. Target (issue 2): within 10 s.

    .venv/bin/python bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from harness import clean_env, free_port, machine_load


def once() -> float:
    with tempfile.TemporaryDirectory() as temp:
        port = free_port()
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "xhuma", "serve", "--port", str(port)], cwd=Path(temp),
                                   env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while time.perf_counter() - started < 60:
                if process.poll() is not None:
                    raise SystemExit("xhuma serve exited before it was ready")
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
            raise SystemExit("xhuma serve was not ready within 60 s")
        finally:
            process.terminate()
            process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    seconds = [once() for _ in range(args.runs)]
    result = {
        "runs": args.runs,
        "ready_median_s": round(statistics.median(seconds), 2),
        "ready_max_s": round(max(seconds), 2),
        "target": "ready within 10 s",
        "machine": machine_load(),
    }
    print(json.dumps(result, indent=2))
    raise SystemExit(0 if max(seconds) < 10 else 1)


if __name__ == "__main__":
    main()

"""ITI-38 under concurrency: N queries for N different patients, GP Connect answering after a fixed latency.

Production topology: Xhuma in its own process (`xhuma serve`, embedded defaults: in-process cache, SQLite audit),
the NHS simulator in another (`xhuma simulate`, GP Connect latency 600 ms), the load generator in this one. The
simulator serves N+2 synthetic patients (copies of one real GP Connect record under new NHS numbers), so every
query is a cold PDS -> SDS -> GP Connect -> convert pipeline. One query is timed alone, then N are sent together.
Without event-loop blocking the batch takes about as long as one query; the target is under 2x.

    .venv/bin/python bench/iti38_concurrency.py [--patients 100] [--latency-ms 600] [--source BUNDLE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from harness import batch_against_one, machine_load, nhs_numbers, nhs_simulator, write_patients, xhuma_gateway

from xhuma.nhs.simulator.records import packaged_data_dir


def main(args: argparse.Namespace) -> dict[str, Any]:
    numbers = nhs_numbers(args.patients + 2)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        data = work / "data"
        data.mkdir()
        write_patients(data, args.source, numbers)
        with nhs_simulator(data, work, gpc_latency_ms=args.latency_ms) as simulator, \
                xhuma_gateway(work, **simulator) as base:
            single, batch, latencies = asyncio.run(batch_against_one(base, numbers))
    result = {
        "patients": args.patients,
        "gpc_latency_ms": args.latency_ms,
        "record": args.source.name,
        "single_s": round(single, 3),
        "batch_s": round(batch, 3),
        "ratio": round(batch / single, 2),
        "slowest_s": round(max(latencies), 3),
        "target": "ratio < 2",
        "machine": machine_load(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=600)
    small_record = packaged_data_dir() / "gpconnect" / "uclh-xhuma" / "9690937278.json"
    parser.add_argument("--source", type=Path, default=small_record,
                        help="the GP Connect record copied for every patient (default: a small real record)")
    outcome = main(parser.parse_args())
    raise SystemExit(0 if outcome["ratio"] < 2 else 1)

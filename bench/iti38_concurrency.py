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
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from harness import machine_load, nhs_simulator, post_once, xhuma_gateway

from xhuma.ihe.demo import _envelope, iti38_request
from xhuma.nhs.nhs_number import check_digit
from xhuma.nhs.simulator.records import packaged_data_dir

NHS_OID = "2.16.840.1.113883.2.1.4.1"
HOME = "urn:oid:2.16.840.1.113883.3.9999.1"


def nhs_numbers(count: int, start: int = 999_010_000) -> list[str]:
    numbers: list[str] = []
    candidate = start
    while len(numbers) < count:
        digits = f"{candidate:09d}"
        check = check_digit(digits)
        if check is not None:
            numbers.append(digits + str(check))
        candidate += 1
    return numbers


def write_patients(directory: Path, source: Path, numbers: list[str]) -> None:
    template = json.loads(source.read_text())
    for number in numbers:
        bundle = copy.deepcopy(template)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == "Patient":
                for identifier in resource.get("identifier", []):
                    if identifier.get("system") == "https://fhir.nhs.uk/Id/nhs-number":
                        identifier["value"] = number
        (directory / f"{number}.json").write_text(json.dumps(bundle))


async def query(base: str, number: str) -> float:
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery", iti38_request(f"{number}^^^&{NHS_OID}&ISO", HOME))
    elapsed, status, answer = await post_once(base, "/SOAP/iti38", envelope, "application/soap+xml")
    if status != 200 or b"ExtrinsicObject" not in answer:
        raise SystemExit(f"ITI-38 failed: HTTP {status} {answer[-300:]!r}")
    return elapsed


async def measure(base: str, numbers: list[str]) -> tuple[float, float, list[float]]:
    await query(base, numbers[0])  # warm-up: imports, connection pools, schema caches
    single = await query(base, numbers[1])
    started = asyncio.get_running_loop().time()
    latencies = await asyncio.gather(*(query(base, number) for number in numbers[2:]))
    return single, asyncio.get_running_loop().time() - started, list(latencies)


def main(args: argparse.Namespace) -> dict[str, Any]:
    numbers = nhs_numbers(args.patients + 2)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        data = work / "data"
        data.mkdir()
        write_patients(data, args.source, numbers)
        with nhs_simulator(data, work, gpc_latency_ms=args.latency_ms) as simulator, \
                xhuma_gateway(work, **simulator) as base:
            single, batch, latencies = asyncio.run(measure(base, numbers))
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

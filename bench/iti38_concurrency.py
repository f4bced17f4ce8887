"""ITI-38 under concurrency: N queries for N different patients, GP Connect answering after a fixed latency.

Xhuma runs in-process on the embedded defaults (simulator profile) with a simulator data directory of N+1
synthetic patients (copies of one small GP Connect record under new NHS numbers). One cold query is timed alone,
then N cold queries for other patients are sent together. Without event-loop blocking the batch takes about as
long as one query; the target is under 2x.

    .venv/bin/python bench/iti38_concurrency.py [--patients 100] [--latency-ms 600] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from xhuma.ihe.demo import embedded_xhuma
from xhuma.nhs.nhs_number import check_digit
from xhuma.nhs.simulator.records import packaged_data_dir

SOURCE_BUNDLE = "uclh-xhuma/9690937278.json"  # a small real record (empty lists): conversion is cheap
NHS_OID = "2.16.840.1.113883.2.1.4.1"


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


def write_patients(directory: Path, numbers: list[str]) -> None:
    template = json.loads((packaged_data_dir() / "gpconnect" / SOURCE_BUNDLE).read_text())
    for number in numbers:
        bundle = copy.deepcopy(template)
        for entry in bundle.get("entry", []):
            resource = entry.get("resource", {})
            if resource.get("resourceType") == "Patient":
                for identifier in resource.get("identifier", []):
                    if identifier.get("system") == "https://fhir.nhs.uk/Id/nhs-number":
                        identifier["value"] = number
        (directory / f"{number}.json").write_text(json.dumps(bundle))


def iti38(number: str) -> bytes:
    from lxml import etree

    from xhuma.ihe.demo import _envelope, iti38_request

    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery",
                            iti38_request(f"{number}^^^&{NHS_OID}&ISO", "urn:oid:2.16.840.1.113883.3.9999.1"))
    assert etree.fromstring(envelope) is not None
    return envelope


async def query(http: httpx.AsyncClient, number: str) -> float:
    started = time.perf_counter()
    response = await http.post("/SOAP/iti38", content=iti38(number),
                               headers={"content-type": "application/soap+xml"})
    elapsed = time.perf_counter() - started
    if response.status_code != 200 or b"ExtrinsicObject" not in response.content:
        raise SystemExit(f"ITI-38 failed: HTTP {response.status_code} {response.content[-300:]!r}")
    return elapsed


@contextlib.asynccontextmanager
async def serving(overrides: dict[str, Any], *, separate: bool) -> AsyncIterator[str]:
    """Xhuma in-process (shares the load generator's event loop) or, closer to production, in its own process."""
    if not separate:
        async with embedded_xhuma(overrides) as base:
            yield base
        return
    env = dict(os.environ)
    env.update({f"XHUMA_{name.upper()}": str(value) for name, value in overrides.items()})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "xhuma", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as probe_client:
            for _ in range(300):
                try:
                    if (await probe_client.get("/health/live")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    numbers = nhs_numbers(args.patients + 2)
    with tempfile.TemporaryDirectory() as temp:
        data = Path(temp) / "data"
        data.mkdir()
        write_patients(data, numbers)
        overrides: dict[str, Any] = {
            "simulator_data": data, "simulator_gpc_latency_ms": args.latency_ms, "working_dir": Path(temp),
            "log_level": "WARNING",
        }
        if args.database_url:
            overrides["database_url"] = args.database_url
        async with serving(overrides, separate=args.separate_process) as base:
            limits = httpx.Limits(max_connections=args.patients + 10, max_keepalive_connections=args.patients + 10)
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
                await query(http, numbers[0])  # warm-up: imports, connection pools, schema caches
                single = await query(http, numbers[1])
                started = time.perf_counter()
                latencies = await asyncio.gather(*(query(http, number) for number in numbers[2:]))
                batch = time.perf_counter() - started
    result = {
        "patients": args.patients,
        "gpc_latency_ms": args.latency_ms,
        "single_s": round(single, 3),
        "batch_s": round(batch, 3),
        "ratio": round(batch / single, 2),
        "slowest_s": round(max(latencies), 3),
        "xhuma_process": "separate" if args.separate_process else "shared with the load generator",
        "target": "ratio < 2",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100)
    parser.add_argument("--latency-ms", type=int, default=600)
    parser.add_argument("--database-url", default=None, help="audit database (default: SQLite in a temp dir)")
    parser.add_argument("--separate-process", action="store_true",
                        help="run Xhuma (and its in-process simulator) in its own process, not the load generator's")
    outcome = asyncio.run(main(parser.parse_args()))
    raise SystemExit(0 if outcome["ratio"] < 2 else 1)

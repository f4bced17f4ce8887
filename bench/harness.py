"""Shared benchmark harness: servers in their own processes, and a lean HTTP/1.1 load generator.

Servers are measured the way they run in production: Xhuma in its own process (`xhuma serve`), the NHS services
elsewhere (here `xhuma simulate` in another process), and the load generator in the benchmark's process. The load
generator speaks HTTP/1.1 keep-alive over raw asyncio streams: an HTTP client library costs more CPU per request
than the servers being measured, and would cap (and flatter) the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from xhuma.ihe.demo import _envelope, iti38_request
from xhuma.nhs.nhs_number import NHS_NUMBER_OID, check_digit

HOME = "urn:oid:2.16.840.1.113883.3.9999.1"  # the gateway's default homeCommunityId
# Longest wait for one answer: a load generator must report a request that never returns, not hang on it. Twice
# the longest an ITI-38 may legitimately wait for another replica's pipeline (XHUMA_PIPELINE_WAIT_SECONDS).
ANSWER_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**settings: object) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("XHUMA_")}
    env.update({name: str(value) for name, value in settings.items()})
    return env


def _wait_until_serving(base: str, process: subprocess.Popen[bytes], path: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(base + path, timeout=1).status_code < 500:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start:\n{log.read_text()[-2000:]}")


@contextlib.contextmanager
def server_process(args: list[str], env: dict[str, str], workdir: Path, *, probe: str = "/health/live",
                   name: str = "server") -> Iterator[str]:
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen([*args, "--port", str(port)], env=env, cwd=workdir, stdout=output,
                                   stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            _wait_until_serving(base, process, probe, log)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def nhs_simulator(data: Path | None, workdir: Path, *, gpc_latency_ms: int = 0) -> Iterator[dict[str, str]]:
    """`xhuma simulate` in its own process; yields the XHUMA_* settings that point a gateway at it."""
    args = [sys.executable, "-m", "xhuma", "simulate", "--client-key", str(workdir / "simulator-client-key.pem")]
    if data is not None:
        args += ["--data", str(data)]
    env = clean_env(XHUMA_SIMULATOR_GPC_LATENCY_MS=gpc_latency_ms, XHUMA_LOG_LEVEL="WARNING",
                    XHUMA_WORKING_DIR=workdir)
    with server_process(args, env, workdir, probe="/", name="simulator") as _base:
        printed = (workdir / "simulator.log").read_text()
        settings = dict(re.findall(r"export (XHUMA_[A-Z_]+)=(\S+)", printed))
        if "XHUMA_GPC_SSP_URL" not in settings:
            raise SystemExit(f"could not read the simulator's settings:\n{printed[-2000:]}")
        yield settings


@contextlib.contextmanager
def xhuma_gateway(workdir: Path, *, launcher: Sequence[str] = (), serve_args: Sequence[str] = (), name: str = "xhuma",
                  **settings: object) -> Iterator[str]:
    """`xhuma serve` in its own process; ``launcher`` is a command prefix that execs it (e.g. into a cgroup)."""
    env = clean_env(**{"XHUMA_LOG_LEVEL": "WARNING", "XHUMA_WORKING_DIR": workdir, **settings})  # settings win
    args = [*launcher, sys.executable, "-m", "xhuma", "serve", *serve_args]
    with server_process(args, env, workdir, name=name) as base:
        yield base


# --- synthetic patients: copies of one real GP Connect record under new NHS numbers, so every query is cold ------
def nhs_numbers(count: int, start: int = 999_010_000) -> list[str]:
    """``count`` valid (Modulus 11) NHS numbers from ``start`` on; distinct ranges give distinct patient sets."""
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
    """One bundle file per number for `xhuma simulate --data`: the simulator synthesises each PDS record from it."""
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


def iti38_envelope(number: str) -> bytes:
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery",
                            iti38_request(f"{number}^^^&{NHS_NUMBER_OID}&ISO", HOME))
    return envelope


async def cold_iti38(base: str, number: str) -> float:
    """One ITI-38 on a fresh connection; its time, or SystemExit when it did not list a document."""
    try:
        elapsed, status, answer = await post_once(base, "/SOAP/iti38", iti38_envelope(number), "application/soap+xml")
    except TimeoutError:
        raise SystemExit(f"ITI-38 failed: no answer within {ANSWER_TIMEOUT_S:.0f} s") from None
    if status != 200 or b"ExtrinsicObject" not in answer:
        raise SystemExit(f"ITI-38 failed: HTTP {status} {answer[-300:]!r}")
    return elapsed


async def batch_against_one(base: str, numbers: list[str], *, warm: int = 1,
                            singles: int = 1) -> tuple[float, float, list[float]]:
    """(one cold ITI-38 alone, all of the remaining ones at once, their latencies): the first ``warm`` numbers
    warm the gateway up (imports, connection pools, schema caches; several at once reach every worker), the next
    ``singles`` are sent one after another and the median of their times is the one query's."""
    await asyncio.gather(*(cold_iti38(base, number) for number in numbers[:warm]))
    single = statistics.median([await cold_iti38(base, number) for number in numbers[warm:warm + singles]])
    started = time.perf_counter()
    latencies = await asyncio.gather(*(cold_iti38(base, number) for number in numbers[warm + singles:]))
    return single, time.perf_counter() - started, list(latencies)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests_per_s": round(self.requests_per_s, 1),
            "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000, 2),
        }


def http_post(host: str, port: int | str, path: str, body: bytes, content_type: str, *, close: bool = False) -> bytes:
    """An HTTP/1.1 POST request, keep-alive unless ``close``."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{connection}\r\n"
    ).encode() + body


async def round_trip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """Send one request and read its answer (Content-Length framed): (status, body)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status, body


async def http_load(base: str, path: str, body: bytes, content_type: str, *, requests: int, concurrency: int,
                    expect: bytes) -> LoadResult:
    """POST ``body`` ``requests`` times over ``concurrency`` keep-alive connections; every answer must be a 200
    containing ``expect``."""
    host, port = base.removeprefix("http://").split(":")

    def check(status: int, answer: bytes) -> None:
        if status != 200 or expect not in answer:
            raise SystemExit(f"{path}: HTTP {status}: {answer[:300]!r}")

    return await request_load(base, http_post(host, port, path, body, content_type), requests=requests,
                              concurrency=concurrency, check=check)


async def request_load(base: str, request: bytes, *, requests: int, concurrency: int,
                       check: Callable[[int, bytes], None]) -> LoadResult:
    """Send the raw ``request`` ``requests`` times over ``concurrency`` keep-alive connections (after one warm-up
    request per connection); ``check(status, answer)`` raises on a wrong answer."""
    host, port = base.removeprefix("http://").split(":")
    remaining = requests
    latencies: list[float] = []

    async def connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                status, answer = await round_trip(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                check(status, answer)
        finally:
            writer.close()

    remaining = concurrency  # warm-up: one request per connection
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    latencies.clear()
    remaining = requests
    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return LoadResult(requests, time.perf_counter() - started, latencies)


async def post_once(base: str, path: str, body: bytes, content_type: str,
                    *, timeout: float = ANSWER_TIMEOUT_S) -> tuple[float, int, bytes]:
    """One POST on a fresh connection: (seconds, status, body); TimeoutError when no answer came in ``timeout``."""
    host, port = base.removeprefix("http://").split(":")
    request = http_post(host, port, path, body, content_type, close=True)
    started = time.perf_counter()
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            status, answer = await round_trip(reader, writer, request)
        finally:
            writer.close()
    return time.perf_counter() - started, status, answer


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over its cores (/proc/stat)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / ticks, sum(fields[:8]) / ticks


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"

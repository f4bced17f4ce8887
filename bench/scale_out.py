"""Proof of scale-out: cold exchanges over 1, 2 and 3 replicas, each limited to 250m of CPU by a cgroup.

Topology (what a Kubernetes Deployment with a CPU limit does, on one machine):

- Replicas are `xhuma serve` processes (one worker each) sharing one Redis database and one PostgreSQL audit
  database, with shared cache and audit-pseudonym keys generated for the run (`xhuma cache new-key`). Each
  replica runs in its own cgroup CPU group with a CFS quota of 25 ms per 100 ms period (250m). It joins the group
  before Python starts (a `sh` wrapper writes its PID into the group, then execs `xhuma serve`), so start-up is
  throttled too, as in a pod.
- One `xhuma simulate` process plays PDS, SDS and GP Connect, GP Connect answering after 300 ms; it and the load
  generator (this process) are not limited.
- The load generator is the load balancer: it spreads requests over the replicas round robin, like a Kubernetes
  Service in front of ready pods. Step k (ITI-55, ITI-38, ITI-39) of exchange i goes to replica (i + k) mod n,
  so the three steps of one exchange land on different replicas: a document listed by one replica must be
  retrievable through another.
- A cold exchange is ITI-55 + ITI-38 + ITI-39 for a patient no replica has seen: every patient is a copy of one
  real GP Connect record under its own NHS number (the simulator synthesises the PDS record from it), and no
  patient is used twice, so every ITI-38 runs the whole PDS -> SDS -> GP Connect -> C-CDA pipeline.

All replicas run throughout; a "1 replica" run sends everything to replica 1 (an idle replica costs nothing), and
the runs are interleaved (1, 2, 3, 1, 2, 3, ...) so that drift on a shared machine hits every count alike. The
figure per count is the median of its runs. Gateway CPU per exchange is the replicas' cgroup CPU usage over the
run; throttling is the groups' `nr_throttled` periods and throttled time.

A second part measures 100 concurrent cold ITI-38 against `xhuma serve --workers 2` (same Redis, PostgreSQL and
keys, no CPU limit) against one cold ITI-38 alone.

The script needs root (it creates cgroups), Redis and PostgreSQL. It exits non-zero only when a request failed or
the set-up did not work; missed targets are reported, not fatal.

    sudo .venv/bin/python bench/scale_out.py [--runs 3] [--exchanges 100] [--concurrency 24] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    HOME,
    batch_against_one,
    clean_env,
    http_post,
    iti38_envelope,
    machine_cpu_seconds,
    machine_load,
    nhs_numbers,
    nhs_simulator,
    round_trip,
    write_patients,
    xhuma_gateway,
)
from lxml import etree

from xhuma.ihe.demo import _envelope, iti39_request, iti55_request, mtom
from xhuma.ihe.xca_query import RIM
from xhuma.ihe.xcpd import HL7
from xhuma.nhs.simulator.records import bundle_patient, packaged_data_dir
from xhuma.records import DemographicQuery

SOAP = "application/soap+xml; charset=UTF-8"
ACTION_55 = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
ACTION_39 = "urn:ihe:iti:2007:CrossGatewayRetrieve"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"  # XDSDocumentEntry.uniqueId (ITI TF-3 4.2.3.2)
CFS_PERIOD_US = 100_000
TARGETS = {2: 1.8, 3: 2.5}  # throughput of n replicas over one (issue 17)
WORKERS_TARGET = 1.3  # 100 concurrent cold ITI-38 over one, `--workers 2` (issue 17)


# --- cgroups: a CPU limit per replica -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Throttling:
    periods: int = 0
    throttled: int = 0
    throttled_ns: int = 0

    def __sub__(self, other: Throttling) -> Throttling:
        return Throttling(self.periods - other.periods, self.throttled - other.throttled,
                          self.throttled_ns - other.throttled_ns)

    def __add__(self, other: Throttling) -> Throttling:
        return Throttling(self.periods + other.periods, self.throttled + other.throttled,
                          self.throttled_ns + other.throttled_ns)


@dataclass(frozen=True)
class CgroupLayout:
    """Where this machine's CPU controller lives: cgroup v2 (one tree, ``cpu.max``) or v1 (``cpu`` and
    ``cpuacct`` hierarchies, possibly mounted together)."""

    version: int
    cpu_root: Path
    cpuacct_root: Path | None

    @classmethod
    def detect(cls, mounts: str | None = None) -> CgroupLayout:
        if mounts is None:
            mounts = Path("/proc/self/mounts").read_text()
        cpu = cpuacct = unified = None
        for line in mounts.splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            mount_point, fstype, options = Path(parts[1]), parts[2], set(parts[3].split(","))
            if fstype == "cgroup" and "cpu" in options:
                cpu = mount_point
            if fstype == "cgroup" and "cpuacct" in options:
                cpuacct = mount_point
            if fstype == "cgroup2":
                unified = mount_point
        if cpu is not None:  # v1, or the hybrid layout whose v2 tree has no controllers
            return cls(1, cpu, cpuacct)
        if unified is not None:
            return cls(2, unified, None)
        raise SystemExit("no cgroup CPU controller is mounted on this machine")

    def create(self, name: str, millicores: int) -> CpuGroup:
        group = CpuGroup(self, name)
        quota = CFS_PERIOD_US * millicores // 1000
        try:
            if self.version == 2:
                controllers = (self.cpu_root / "cgroup.subtree_control").read_text().split()
                if "cpu" not in controllers:
                    (self.cpu_root / "cgroup.subtree_control").write_text("+cpu")
                group.cpu_dir.mkdir()
                (group.cpu_dir / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
            else:
                group.cpu_dir.mkdir()
                (group.cpu_dir / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                (group.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
                if group.cpuacct_dir is not None and group.cpuacct_dir != group.cpu_dir:
                    group.cpuacct_dir.mkdir()
        except OSError as error:
            group.remove()
            raise SystemExit(f"cannot create the CPU group {group.cpu_dir} ({error.strerror}): run as root") from None
        return group


@dataclass(frozen=True)
class CpuGroup:
    layout: CgroupLayout
    name: str

    @property
    def cpu_dir(self) -> Path:
        return self.layout.cpu_root / self.name

    @property
    def cpuacct_dir(self) -> Path | None:
        return self.layout.cpuacct_root / self.name if self.layout.cpuacct_root is not None else None

    @property
    def procs_files(self) -> list[Path]:
        directories = {self.cpu_dir} | ({self.cpuacct_dir} if self.cpuacct_dir is not None else set())
        return sorted(directory / "cgroup.procs" for directory in directories)

    def launcher(self) -> list[str]:
        """A command prefix that moves itself into this group, then execs the rest of the command line."""
        return ["sh", "-c", 'for procs in $0; do echo $$ > "$procs"; done; exec "$@"',
                " ".join(str(path) for path in self.procs_files)]

    def usage_ns(self) -> int:
        if self.layout.version == 2:
            return parse_stat((self.cpu_dir / "cpu.stat").read_text())["usage_usec"] * 1000
        if self.cpuacct_dir is None:
            raise SystemExit("cgroup v1 without the cpuacct controller: cannot account CPU per replica")
        return int((self.cpuacct_dir / "cpuacct.usage").read_text())

    def throttling(self) -> Throttling:
        stat = parse_stat((self.cpu_dir / "cpu.stat").read_text())
        throttled_ns = stat["throttled_usec"] * 1000 if self.layout.version == 2 else stat["throttled_time"]
        return Throttling(stat["nr_periods"], stat["nr_throttled"], throttled_ns)

    def remove(self) -> None:
        """Remove the group (its processes, if any are left, go back to the root group first)."""
        for directory in {self.cpu_dir, self.cpuacct_dir} - {None}:
            assert directory is not None
            if not directory.exists():
                continue
            for pid in (directory / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    (directory.parent / "cgroup.procs").write_text(pid)
            with contextlib.suppress(OSError):
                directory.rmdir()


def parse_stat(text: str) -> dict[str, int]:
    """A cgroup ``cpu.stat`` file: one ``name value`` pair per line."""
    pairs = (line.split() for line in text.splitlines())
    return {pair[0]: int(pair[1]) for pair in pairs if len(pair) == 2 and pair[1].lstrip("-").isdigit()}


# --- shared state: keys, PostgreSQL, Redis --------------------------------------------------------------------------
def shared_keys() -> dict[str, str]:
    """Fresh keys every replica shares: the cache encryption key from `xhuma cache new-key` (its hash key too,
    since it is the last listed key) and the audit pseudonym key."""
    printed = subprocess.run([sys.executable, "-m", "xhuma", "cache", "new-key", "--kid", "bench"],
                             env=clean_env(), capture_output=True, text=True, check=True).stdout.strip()
    return {"XHUMA_CACHE_KEYS": printed, "XHUMA_AUDIT_HMAC_KEY": secrets.token_urlsafe(32)}


def fresh_database(admin_url: str, name: str) -> str:
    """(Re)create this benchmark's own PostgreSQL database and migrate it once; its SQLAlchemy URL."""
    import asyncpg

    async def recreate() -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(recreate())
    url = admin_url.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0] + "/" + name
    migrated = subprocess.run([sys.executable, "-m", "xhuma", "db", "upgrade"], env=clean_env(XHUMA_DATABASE_URL=url),
                              capture_output=True, text=True)
    if migrated.returncode != 0:
        raise SystemExit(f"xhuma db upgrade failed: {migrated.stderr.strip()[-500:]}")
    return url


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


# --- the EHR: one cold exchange, requests spread over the replicas --------------------------------------------------
def ehr_demographics(source: Path) -> DemographicQuery:
    """What the EHR knows of every synthetic patient: the demographics of the copied record's Patient."""
    patient = bundle_patient(json.loads(source.read_text())) or {}
    names = patient.get("name") or [{}]
    name = next((item for item in names if item.get("use") in ("official", "usual")), names[0])
    gender = {"male": "M", "female": "F"}.get(str(patient.get("gender", "")).lower(), "UN")
    return DemographicQuery(family=name.get("family"), given=tuple(name.get("given") or ())[:1],
                            birth_date=str(patient.get("birthDate") or "").replace("-", "") or None, gender=gender)


class ExchangeFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


def failure_reason(status: int, answer: bytes) -> str:
    """HTTP status plus the IHE error codes or the SOAP Fault reason of an answer (never patient data)."""
    codes = sorted(set(re.findall(rb'errorCode="([^"]+)"', answer)))
    if codes:
        return f"HTTP {status} " + ",".join(code.decode() for code in codes)
    fault = re.search(rb"<(?:\w+:)?Text[^>]*>([^<]{0,120})<", answer)
    return f"HTTP {status}" + (f" Fault: {fault.group(1).decode()}" if fault else "")


class Route:
    """One client's keep-alive connections, one per replica; a connection that failed is reopened on next use."""

    def __init__(self, bases: Sequence[str]) -> None:
        self.addresses = [base.removeprefix("http://").split(":") for base in bases]
        self.connections: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}

    async def post(self, replica: int, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        host, port = self.addresses[replica]
        if replica not in self.connections:
            self.connections[replica] = await asyncio.open_connection(host, int(port))
        reader, writer = self.connections[replica]
        try:
            status, answer = await round_trip(reader, writer, http_post(host, port, path, body, content_type))
        except BaseException:
            self.drop(replica)
            raise
        if status != 200:
            self.drop(replica)  # the server may close after an error
        return status, answer

    def drop(self, replica: int) -> None:
        connection = self.connections.pop(replica, None)
        if connection is not None:
            connection[1].close()

    def close(self) -> None:
        for replica in list(self.connections):
            self.drop(replica)


async def cold_exchange(route: Route, first: int, replicas: int, number: str, demographics: DemographicQuery) -> None:
    """ITI-55, ITI-38 and ITI-39 for one patient, step k on replica (first + k) mod ``replicas``."""
    envelope, _ = _envelope(ACTION_55, iti55_request(number, demographics))
    status, answer = await route.post(first % replicas, "/SOAP/iti55", envelope, SOAP)
    code = etree.fromstring(answer).find(f".//{{{HL7}}}queryResponseCode") if status == 200 else None
    if code is None or code.get("code") != "OK":
        detail = "" if code is None else f" {code.get('code')}"
        raise ExchangeFailed("ITI-55", failure_reason(status, answer) + detail)

    status, answer = await route.post((first + 1) % replicas, "/SOAP/iti38", iti38_envelope(number), SOAP)
    entry = etree.fromstring(answer).find(f".//{{{RIM}}}ExtrinsicObject") if status == 200 else None
    if entry is None:
        raise ExchangeFailed("ITI-38", failure_reason(status, answer) + " no document")
    unique_id = next((item.get("value") for item in entry.iterfind(f"{{{RIM}}}ExternalIdentifier")
                      if item.get("identificationScheme") == UNIQUE_ID_SCHEME), None)
    repository = next((slot.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value") for slot in entry.iterfind(f"{{{RIM}}}Slot")
                       if slot.get("name") == "repositoryUniqueId"), None)
    if not unique_id or not repository:
        raise ExchangeFailed("ITI-38", "DocumentEntry without uniqueId or repositoryUniqueId")

    envelope, _ = _envelope(ACTION_39, iti39_request(entry.get("home") or HOME, repository, unique_id))
    body, content_type = mtom(envelope)
    status, answer = await route.post((first + 2) % replicas, "/SOAP/iti39", body, content_type)
    if status != 200 or b"ResponseStatusType:Success" not in answer or b"ClinicalDocument" not in answer:
        raise ExchangeFailed("ITI-39", failure_reason(status, answer))


@dataclass
class LoadOutcome:
    seconds: float
    latencies: list[float]
    errors: Counter[str] = field(default_factory=Counter)


async def exchanges(bases: Sequence[str], numbers: Sequence[str], concurrency: int,
                    demographics: DemographicQuery) -> LoadOutcome:
    """One cold exchange per number, ``concurrency`` at a time, spread over ``bases``."""
    queue = list(enumerate(numbers))
    queue.reverse()
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def client() -> None:
        route = Route(bases)
        try:
            while queue:
                index, number = queue.pop()
                started = time.perf_counter()
                try:
                    await cold_exchange(route, index, len(bases), number, demographics)
                except ExchangeFailed as failure:
                    errors[str(failure)] += 1
                except (OSError, asyncio.IncompleteReadError, etree.XMLSyntaxError, ValueError) as error:
                    errors[f"exchange: {type(error).__name__}"] += 1
                else:
                    latencies.append(time.perf_counter() - started)
        finally:
            route.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LoadOutcome(time.perf_counter() - started, latencies, errors)


# --- runs ------------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    replicas: int
    exchanges: int
    seconds: float
    latencies: list[float]
    errors: Counter[str]
    cpu_s: float  # all replicas' CPU time over the run
    throttling: Throttling
    machine_busy: float  # share of the machine's cores busy over the run

    @property
    def throughput(self) -> float:
        return self.exchanges / self.seconds

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies) or [0.0]
        return {
            "replicas": self.replicas,
            "exchanges_per_s": round(self.throughput, 2),
            "seconds": round(self.seconds, 2),
            "p50_s": round(statistics.median(ordered), 3),
            "p99_s": round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 3),
            "gateway_cpu_ms_per_exchange": round(self.cpu_s * 1000 / self.exchanges, 1),
            "gateway_cpu_cores": round(self.cpu_s / self.seconds, 3),
            "periods": self.throttling.periods,
            "throttled_periods": self.throttling.throttled,
            "throttled_s": round(self.throttling.throttled_ns / 1e9, 2),
            "machine_busy": f"{self.machine_busy:.0%}",
            "errors": sum(self.errors.values()),
        }


def measured_run(bases: Sequence[str], groups: Sequence[CpuGroup], numbers: Sequence[str], concurrency: int,
                 demographics: DemographicQuery) -> Run:
    cpu_before = [group.usage_ns() for group in groups]
    throttling_before = [group.throttling() for group in groups]
    busy_before, total_before = machine_cpu_seconds()
    outcome = asyncio.run(exchanges(bases, numbers, concurrency, demographics))
    busy_after, total_after = machine_cpu_seconds()
    cpu_s = sum(group.usage_ns() - before for group, before in zip(groups, cpu_before, strict=True)) / 1e9
    throttling = sum((group.throttling() - before for group, before in zip(groups, throttling_before, strict=True)),
                     Throttling())
    return Run(len(bases), len(numbers), outcome.seconds, outcome.latencies, outcome.errors, cpu_s, throttling,
               (busy_after - busy_before) / max(total_after - total_before, 1e-9))


@contextlib.contextmanager
def replicas_in_groups(layout: CgroupLayout, count: int, millicores: int, work: Path,
                       settings: dict[str, str]) -> Iterator[tuple[list[str], list[CpuGroup]]]:
    """``count`` `xhuma serve` processes, each in its own CPU group of ``millicores``; groups removed after."""
    with contextlib.ExitStack() as stack:
        bases: list[str] = []
        groups: list[CpuGroup] = []
        for index in range(1, count + 1):
            group = layout.create(f"xhuma-bench-{os.getpid()}-replica{index}", millicores)
            stack.callback(group.remove)  # runs after the replica has stopped (callbacks unwind in reverse)
            groups.append(group)
            directory = work / f"replica{index}"
            directory.mkdir()
            bases.append(stack.enter_context(
                xhuma_gateway(directory, launcher=group.launcher(), name=f"replica{index}", **settings)))
        yield bases, groups


def ratio_line(count: int, ratio: float) -> str:
    target = TARGETS.get(count)
    if target is None:
        return f"{count} replicas / 1: {ratio:.2f}x"
    return f"{count} replicas / 1: {ratio:.2f}x (target >= {target}x: {'met' if ratio >= target else 'MISSED'})"


def scale_out(args: argparse.Namespace, layout: CgroupLayout, work: Path, settings: dict[str, str],
              numbers: list[str], demographics: DemographicQuery) -> tuple[dict[str, Any], int]:
    counts = sorted(args.replicas)
    warm, numbers = numbers[:args.concurrency], numbers[args.concurrency:]
    runs: dict[int, list[Run]] = {count: [] for count in counts}
    with replicas_in_groups(layout, max(counts), args.millicores, work, settings) as (bases, groups):
        print(f"{len(bases)} replicas up at {args.millicores}m each; warming them up", flush=True)
        warm_up = asyncio.run(exchanges(bases, warm, args.concurrency, demographics))
        if warm_up.errors:
            print(f"warm-up errors: {dict(warm_up.errors)}", flush=True)
        for round_ in range(args.runs):
            for count in counts:
                batch, numbers = numbers[:args.exchanges], numbers[args.exchanges:]
                run = measured_run(bases[:count], groups[:count], batch, args.concurrency, demographics)
                runs[count].append(run)
                print(f"round {round_ + 1}: " + json.dumps(run.summary()), flush=True)
                for error, times in run.errors.items():
                    print(f"    {times} x {error}", flush=True)
    medians = {count: statistics.median(run.throughput for run in runs[count]) for count in counts}
    result: dict[str, Any] = {
        "median_exchanges_per_s": {count: round(value, 2) for count, value in medians.items()},
        "gateway_cpu_ms_per_exchange": {
            count: round(statistics.median(run.cpu_s * 1000 / run.exchanges for run in runs[count]), 1)
            for count in counts},
        "throttled_periods_per_run": {count: [run.throttling.throttled for run in runs[count]] for count in counts},
        "throttled_s_per_run": {count: [round(run.throttling.throttled_ns / 1e9, 1) for run in runs[count]]
                                for count in counts},
        "runs": {count: [run.summary() for run in runs[count]] for count in counts},
    }
    if 1 in medians:
        result["ratios"] = {count: round(medians[count] / medians[1], 2) for count in counts if count != 1}
    errors = sum(sum(run.errors.values()) for count_runs in runs.values() for run in count_runs)
    return result, errors


def workers_batch(args: argparse.Namespace, work: Path, settings: dict[str, str], numbers: list[str]) -> dict[str, Any]:
    """100 concurrent cold ITI-38 against `xhuma serve --workers 2` vs one alone, median over the runs."""
    directory = work / "workers"
    directory.mkdir()
    warm = 8
    ratios: list[dict[str, float]] = []
    with xhuma_gateway(directory, serve_args=["--workers", "2"], name="workers", **settings) as base:
        for index in range(args.runs):
            batch = numbers[: warm + 1 + args.queries] if index == 0 else numbers[: 1 + args.queries]
            numbers = numbers[len(batch):]
            single, seconds, latencies = asyncio.run(batch_against_one(base, batch, warm=warm if index == 0 else 0))
            ratios.append({"single_s": round(single, 3), "batch_s": round(seconds, 3),
                           "ratio": round(seconds / single, 2), "slowest_s": round(max(latencies), 3)})
            print(f"--workers 2, run {index + 1}: {json.dumps(ratios[-1])}", flush=True)
    ratio = statistics.median(run["ratio"] for run in ratios)
    return {"queries": args.queries, "runs": ratios, "median_ratio": ratio,
            "target": f"< {WORKERS_TARGET}", "met": ratio < WORKERS_TARGET}


def main(args: argparse.Namespace) -> int:
    layout = CgroupLayout.detect()
    demographics = ehr_demographics(args.source)
    counts = sorted(args.replicas)
    exchange_numbers = nhs_numbers(args.concurrency + args.runs * len(counts) * args.exchanges)
    query_numbers = nhs_numbers(8 + args.runs * (1 + args.queries), start=999_500_000) if args.queries else []
    keys = shared_keys()
    database_url = fresh_database(args.database_admin_url, args.database)
    redis_url = f"{args.redis.rstrip('/')}/{args.redis_db}"
    flush_redis(redis_url)
    print(f"cgroup v{layout.version} at {layout.cpu_root}; {machine_load()}; record {args.source.name}; "
          f"GP Connect {args.latency_ms} ms; {args.exchanges} exchanges x {args.runs} runs per replica count, "
          f"concurrency {args.concurrency}", flush=True)
    report: dict[str, Any] = {"record": args.source.name, "gpc_latency_ms": args.latency_ms,
                              "millicores": args.millicores, "concurrency": args.concurrency,
                              "exchanges": args.exchanges, "runs": args.runs}
    errors = 0
    try:
        with tempfile.TemporaryDirectory() as temp:
            work = Path(temp)
            data = work / "data"
            data.mkdir()
            write_patients(data, args.source, exchange_numbers)
            write_patients(data, args.query_source, query_numbers)
            with nhs_simulator(data, work, gpc_latency_ms=args.latency_ms) as simulator:
                settings = {**simulator, **keys, "XHUMA_REDIS_URL": redis_url, "XHUMA_DATABASE_URL": database_url}
                scale, errors = scale_out(args, layout, work, {**settings, "XHUMA_REDIS_NAMESPACE": "scale"},
                                          exchange_numbers, demographics)
                report["scale_out"] = scale
                if args.queries:
                    report["workers_2"] = workers_batch(args, work, {**settings, "XHUMA_REDIS_NAMESPACE": "workers"},
                                                        query_numbers)
    finally:
        flush_redis(redis_url)
    report["machine"] = machine_load()
    print(json.dumps(report, indent=2))
    for count, ratio in report["scale_out"].get("ratios", {}).items():
        print(ratio_line(count, ratio))
    if "workers_2" in report:
        workers = report["workers_2"]
        print(f"--workers 2: {args.queries} concurrent cold ITI-38 / one: {workers['median_ratio']:.2f}x "
              f"(target {workers['target']}: {'met' if workers['met'] else 'MISSED'})")
    print(f"errors: {errors}")
    return 1 if errors else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    records = packaged_data_dir() / "gpconnect" / "uclh-xhuma"
    parser.add_argument("--runs", type=int, default=3, help="runs per replica count (the median is reported)")
    parser.add_argument("--exchanges", type=int, default=100, help="cold exchanges per run")
    parser.add_argument("--concurrency", type=int, default=24, help="exchanges in flight")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3], help="replica counts to compare")
    parser.add_argument("--millicores", type=int, default=250, help="CPU limit per replica")
    parser.add_argument("--latency-ms", type=int, default=300, help="GP Connect latency")
    parser.add_argument("--queries", type=int, default=100,
                        help="concurrent cold ITI-38 against --workers 2 (0: skip that part)")
    parser.add_argument("--source", type=Path, default=records / "9690937278.json",
                        help="the GP Connect record copied for every exchange's patient")
    parser.add_argument("--query-source", type=Path, default=records / "9690937278.json",
                        help="the record copied for the --workers 2 queries' patients")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379", help="Redis server")
    parser.add_argument("--redis-db", type=int, default=12, help="this benchmark's own Redis database (flushed)")
    parser.add_argument("--database-admin-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL URL allowed to create databases")
    parser.add_argument("--database", default="xhuma_bench_scale", help="this benchmark's own database (recreated)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 run of 20 exchanges, 20 queries")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.exchanges, args.queries = 1, 20, min(args.queries, 20)
        args.concurrency = min(args.concurrency, 10)
    return args


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))

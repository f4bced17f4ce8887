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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness import (
    ANSWER_TIMEOUT_S,
    HOME,
    batch_against_one,
    clean_env,
    cold_iti38,
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

T = TypeVar("T")
SOAP = "application/soap+xml; charset=UTF-8"
ACTION_55 = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
ACTION_39 = "urn:ihe:iti:2007:CrossGatewayRetrieve"
UNIQUE_ID_SCHEME = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"  # XDSDocumentEntry.uniqueId (ITI TF-3 4.2.3.2)
CFS_PERIOD_US = 100_000
# A Guaranteed pod's CPU request is reserved on its node (kubelet: cpu.shares from the request, and the pods' slice
# weighted above system daemons). This machine runs other work outside any group, each process weighing 1024 (v1) or
# 100 (v2); the benchmark's groups weigh ten times (v1) or a hundred times (v2) more, unless --no-reserve.
V1_RESERVED_SHARES = 10_240
V2_MAX_WEIGHT = 10_000
TARGETS = {2: 1.8, 3: 2.5}  # throughput of n replicas over one (issue 17)
WORKERS_TARGET = 1.3  # 100 concurrent cold ITI-38 over one, `--workers 2` (issue 17)
SINGLES = 5  # one cold ITI-38 alone: the median of this many, one after another


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

    def create(self, name: str, millicores: int | None, *, reserved: bool) -> CpuGroup:
        """A group limited to ``millicores`` (None: no limit); ``reserved`` gives it the largest CPU weight, so
        that processes outside any group (other work on this machine) cannot take its share."""
        group = CpuGroup(self, name)
        quota = None if millicores is None else CFS_PERIOD_US * millicores // 1000
        try:
            if self.version == 2:
                controllers = (self.cpu_root / "cgroup.subtree_control").read_text().split()
                if "cpu" not in controllers:
                    (self.cpu_root / "cgroup.subtree_control").write_text("+cpu")
                group.cpu_dir.mkdir()
                if quota is not None:
                    (group.cpu_dir / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
                if reserved:
                    (group.cpu_dir / "cpu.weight").write_text(str(V2_MAX_WEIGHT))
            else:
                group.cpu_dir.mkdir()
                if quota is not None:
                    (group.cpu_dir / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
                    (group.cpu_dir / "cpu.cfs_quota_us").write_text(str(quota))
                if reserved:
                    (group.cpu_dir / "cpu.shares").write_text(str(V1_RESERVED_SHARES))
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

    def join(self, pid: int) -> None:
        for procs in self.procs_files:
            procs.write_text(str(pid))

    def leave(self, pid: int) -> None:
        for procs in self.procs_files:
            (procs.parent.parent / "cgroup.procs").write_text(str(pid))

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
        for directory in {self.cpu_dir, self.cpuacct_dir}:
            if directory is None or not directory.exists():
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


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """CPU seconds of a process and its live descendants (a `--workers` server: supervisor and workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    tree, total = {root}, 0.0
    for pid in sorted(parents):  # children have larger PIDs than their parents unless PIDs wrapped
        if parents[pid] in tree:
            tree.add(pid)
    for pid in tree:
        with contextlib.suppress(OSError):
            total += process_cpu_s(pid)
    return total


def child_pid(marker: str) -> int | None:
    """The PID of this process's child whose command line contains ``marker``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) != os.getpid():
                continue
            if marker.encode() in (entry / "cmdline").read_bytes():
                return int(entry.name)
    return None


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
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                if replica not in self.connections:
                    self.connections[replica] = await asyncio.open_connection(host, int(port))
                reader, writer = self.connections[replica]
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


@dataclass(frozen=True)
class DocumentRef:
    home: str
    repository: str
    unique_id: str


async def discover(route: Route, replica: int, number: str, demographics: DemographicQuery) -> None:
    envelope, _ = _envelope(ACTION_55, iti55_request(number, demographics))
    status, answer = await route.post(replica, "/SOAP/iti55", envelope, SOAP)
    code = etree.fromstring(answer).find(f".//{{{HL7}}}queryResponseCode") if status == 200 else None
    if code is None or code.get("code") != "OK":
        detail = "" if code is None else f" {code.get('code')}"
        raise ExchangeFailed("ITI-55", failure_reason(status, answer) + detail)


async def find_document(route: Route, replica: int, number: str) -> DocumentRef:
    status, answer = await route.post(replica, "/SOAP/iti38", iti38_envelope(number), SOAP)
    entry = etree.fromstring(answer).find(f".//{{{RIM}}}ExtrinsicObject") if status == 200 else None
    if entry is None:
        raise ExchangeFailed("ITI-38", failure_reason(status, answer) + " no document")
    unique_id = next((item.get("value") for item in entry.iterfind(f"{{{RIM}}}ExternalIdentifier")
                      if item.get("identificationScheme") == UNIQUE_ID_SCHEME), None)
    repository = next((slot.findtext(f"{{{RIM}}}ValueList/{{{RIM}}}Value") for slot in entry.iterfind(f"{{{RIM}}}Slot")
                       if slot.get("name") == "repositoryUniqueId"), None)
    if not unique_id or not repository:
        raise ExchangeFailed("ITI-38", "DocumentEntry without uniqueId or repositoryUniqueId")
    return DocumentRef(entry.get("home") or HOME, repository, unique_id)


async def retrieve(route: Route, replica: int, document: DocumentRef) -> None:
    envelope, _ = _envelope(ACTION_39, iti39_request(document.home, document.repository, document.unique_id))
    body, content_type = mtom(envelope)
    status, answer = await route.post(replica, "/SOAP/iti39", body, content_type)
    if status != 200 or b"ResponseStatusType:Success" not in answer or b"ClinicalDocument" not in answer:
        raise ExchangeFailed("ITI-39", failure_reason(status, answer))


async def cold_exchange(route: Route, first: int, replicas: int, number: str, demographics: DemographicQuery) -> None:
    """ITI-55, ITI-38 and ITI-39 for one patient, step k on replica (first + k) mod ``replicas``."""
    await discover(route, first % replicas, number, demographics)
    document = await find_document(route, (first + 1) % replicas, number)
    await retrieve(route, (first + 2) % replicas, document)


@dataclass
class LoadOutcome:
    seconds: float
    latencies: list[float]
    errors: Counter[str] = field(default_factory=Counter)


async def spread(bases: Sequence[str], items: Sequence[T], concurrency: int,
                 action: Callable[[Route, int, T], Awaitable[object]]) -> LoadOutcome:
    """``action(route, index, item)`` for every item, ``concurrency`` at a time, each client with its own
    connections to ``bases``."""
    queue = list(enumerate(items))
    queue.reverse()
    latencies: list[float] = []
    errors: Counter[str] = Counter()

    async def client() -> None:
        route = Route(bases)
        try:
            while queue:
                index, item = queue.pop()
                started = time.perf_counter()
                try:
                    await action(route, index, item)
                except ExchangeFailed as failure:
                    errors[str(failure)] += 1
                except TimeoutError:
                    errors[f"no answer within {ANSWER_TIMEOUT_S:.0f} s"] += 1
                except (OSError, asyncio.IncompleteReadError, etree.XMLSyntaxError, ValueError) as error:
                    errors[f"request: {type(error).__name__}"] += 1
                else:
                    latencies.append(time.perf_counter() - started)
        finally:
            route.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return LoadOutcome(time.perf_counter() - started, latencies, errors)


async def exchanges(bases: Sequence[str], numbers: Sequence[str], concurrency: int,
                    demographics: DemographicQuery) -> LoadOutcome:
    """One cold exchange per number, ``concurrency`` at a time, spread over ``bases``."""
    async def exchange(route: Route, index: int, number: str) -> None:
        await cold_exchange(route, index, len(bases), number, demographics)

    return await spread(bases, numbers, concurrency, exchange)


async def steps(base: str, group: CpuGroup, numbers: Sequence[str], concurrency: int,
                demographics: DemographicQuery) -> dict[str, Any]:
    """The replica's CPU per cold exchange, step by step: all the ITI-55s, then all the ITI-38s, then all the
    ITI-39s (each ITI-38 finds its patient's PDS record cached by the ITI-55, as in an exchange)."""
    documents: dict[str, DocumentRef] = {}

    async def step_55(route: Route, _index: int, number: str) -> None:
        await discover(route, 0, number, demographics)

    async def step_38(route: Route, _index: int, number: str) -> None:
        documents[number] = await find_document(route, 0, number)

    async def step_39(route: Route, _index: int, number: str) -> None:
        await retrieve(route, 0, documents[number])

    result: dict[str, Any] = {}
    errors: Counter[str] = Counter()
    for name, action in (("ITI-55", step_55), ("ITI-38", step_38), ("ITI-39", step_39)):
        before = group.usage_ns()
        outcome = await spread([base], list(documents) if name == "ITI-39" else numbers, concurrency, action)
        result[name] = round((group.usage_ns() - before) / 1e6 / max(len(outcome.latencies), 1), 1)
        errors.update(outcome.errors)
    result["errors"] = sum(errors.values())
    return result


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
    simulator_cpu_s: float
    load_generator_cpu_s: float
    millicores: int

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
            "quota_used": f"{self.cpu_s / self.seconds / (self.replicas * self.millicores / 1000):.0%}",
            "periods": self.throttling.periods,
            "throttled_periods": self.throttling.throttled,
            "throttled_s": round(self.throttling.throttled_ns / 1e9, 2),
            "simulator_cpu_ms_per_exchange": round(self.simulator_cpu_s * 1000 / self.exchanges, 1),
            "load_generator_cpu_ms_per_exchange": round(self.load_generator_cpu_s * 1000 / self.exchanges, 1),
            "machine_busy": f"{self.machine_busy:.0%}",
            "errors": sum(self.errors.values()),
        }


def measured_run(bases: Sequence[str], groups: Sequence[CpuGroup], numbers: Sequence[str], concurrency: int,
                 demographics: DemographicQuery, simulator_pid: int, millicores: int) -> Run:
    cpu_before = [group.usage_ns() for group in groups]
    throttling_before = [group.throttling() for group in groups]
    busy_before, total_before = machine_cpu_seconds()
    simulator_before, own_before = process_cpu_s(simulator_pid), time.process_time()
    outcome = asyncio.run(exchanges(bases, numbers, concurrency, demographics))
    simulator_cpu_s, own_cpu_s = process_cpu_s(simulator_pid) - simulator_before, time.process_time() - own_before
    busy_after, total_after = machine_cpu_seconds()
    cpu_s = sum(group.usage_ns() - before for group, before in zip(groups, cpu_before, strict=True)) / 1e9
    throttling = sum((group.throttling() - before for group, before in zip(groups, throttling_before, strict=True)),
                     Throttling())
    return Run(len(bases), len(numbers), outcome.seconds, outcome.latencies, outcome.errors, cpu_s, throttling,
               (busy_after - busy_before) / max(total_after - total_before, 1e-9), simulator_cpu_s, own_cpu_s,
               millicores)


@contextlib.contextmanager
def replicas_in_groups(layout: CgroupLayout, count: int, millicores: int, reserved: bool, work: Path,
                       settings: dict[str, str]) -> Iterator[tuple[list[str], list[CpuGroup]]]:
    """``count`` `xhuma serve` processes, each in its own CPU group of ``millicores``; groups removed after."""
    with contextlib.ExitStack() as stack:
        bases: list[str] = []
        groups: list[CpuGroup] = []
        for index in range(1, count + 1):
            group = layout.create(f"xhuma-bench-{os.getpid()}-replica{index}", millicores, reserved=reserved)
            stack.callback(group.remove)  # runs after the replica has stopped (callbacks unwind in reverse)
            groups.append(group)
            directory = work / f"replica{index}"
            directory.mkdir()
            bases.append(stack.enter_context(
                xhuma_gateway(directory, launcher=group.launcher(), name=f"replica{index}", **settings)))
        yield bases, groups


@contextlib.contextmanager
def reserved_support(layout: CgroupLayout, reserve: bool) -> Iterator[None]:
    """With ``reserve``, the simulator and the load generator (and the `--workers 2` server, started from here) run
    in one group of reserved weight and no limit, so that other work on the machine cannot starve them either."""
    if not reserve:
        yield
        return
    simulator = child_pid("simulate")
    if simulator is None:
        raise SystemExit("cannot find the simulator's process")
    group = layout.create(f"xhuma-bench-{os.getpid()}-support", None, reserved=True)
    try:
        group.join(simulator)
        group.join(os.getpid())
        try:
            yield
        finally:
            group.leave(os.getpid())
            with contextlib.suppress(OSError):
                group.leave(simulator)
    finally:
        group.remove()


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
    simulator_pid = child_pid("simulate")
    if simulator_pid is None:
        raise SystemExit("cannot find the simulator's process")
    with replicas_in_groups(layout, max(counts), args.millicores, args.reserve, work, settings) as (bases, groups):
        print(f"{len(bases)} replicas up at {args.millicores}m each; warming them up", flush=True)
        warm_up = asyncio.run(exchanges(bases, warm, args.concurrency, demographics))
        if warm_up.errors:
            print(f"warm-up errors: {dict(warm_up.errors)}", flush=True)
        for round_ in range(args.runs):
            for count in counts:
                batch, numbers = numbers[:args.exchanges], numbers[args.exchanges:]
                run = measured_run(bases[:count], groups[:count], batch, args.concurrency, demographics,
                                   simulator_pid, args.millicores)
                runs[count].append(run)
                print(f"round {round_ + 1}: " + json.dumps(run.summary()), flush=True)
                for error, times in run.errors.items():
                    print(f"    {times} x {error}", flush=True)
        batch = numbers[:args.exchanges]
        breakdown = asyncio.run(steps(bases[0], groups[0], batch, args.concurrency, demographics))
        print(f"gateway CPU per step (ms, one replica, {len(batch)} patients): {json.dumps(breakdown)}", flush=True)
    medians = {count: statistics.median(run.throughput for run in runs[count]) for count in counts}
    result: dict[str, Any] = {
        "median_exchanges_per_s": {count: round(value, 2) for count, value in medians.items()},
        "gateway_cpu_ms_per_exchange": {
            count: round(statistics.median(run.cpu_s * 1000 / run.exchanges for run in runs[count]), 1)
            for count in counts},
        "gateway_cpu_ms_per_step": breakdown,
        "throttled_periods_per_run": {count: [run.throttling.throttled for run in runs[count]] for count in counts},
        "throttled_s_per_run": {count: [round(run.throttling.throttled_ns / 1e9, 1) for run in runs[count]]
                                for count in counts},
        "runs": {count: [run.summary() for run in runs[count]] for count in counts},
    }
    if 1 in medians:
        result["ratios"] = {count: round(medians[count] / medians[1], 2) for count in counts if count != 1}
    errors = sum(sum(run.errors.values()) for count_runs in runs.values() for run in count_runs)
    return result, errors + breakdown["errors"]


def workers_batch(args: argparse.Namespace, work: Path, settings: dict[str, str], numbers: list[str]) -> dict[str, Any]:
    """``args.queries`` concurrent cold ITI-38 against `xhuma serve --workers 2` vs one alone (the median of
    SINGLES, one after another), median over the runs, with the server's CPU per query and the ratio that CPU alone
    would allow (two workers: half of the batch's CPU in series after one query)."""
    directory = work / "workers"
    directory.mkdir()
    warm, numbers = numbers[:8], numbers[8:]
    runs: list[dict[str, float]] = []
    with xhuma_gateway(directory, serve_args=["--workers", "2"], name="workers", **settings) as base:
        server = child_pid("--workers")
        if server is None:
            raise SystemExit("cannot find the --workers 2 server's process")

        async def warm_up() -> None:  # several at once, so that both workers have served
            await asyncio.gather(*(cold_iti38(base, number) for number in warm))

        asyncio.run(warm_up())
        for index in range(args.runs):
            batch, numbers = numbers[:SINGLES + args.queries], numbers[SINGLES + args.queries:]
            cpu_before = tree_cpu_s(server)
            single, seconds, latencies = asyncio.run(batch_against_one(base, batch, warm=0, singles=SINGLES))
            cpu_per_query = (tree_cpu_s(server) - cpu_before) / len(batch)
            floor = (single + (args.queries - 1) * cpu_per_query / 2) / single
            runs.append({"single_s": round(single, 3), "batch_s": round(seconds, 3),
                         "ratio": round(seconds / single, 2), "slowest_s": round(max(latencies), 3),
                         "cpu_ms_per_query": round(cpu_per_query * 1000, 1), "cpu_floor_ratio": round(floor, 2)})
            print(f"--workers 2, run {index + 1}: {json.dumps(runs[-1])}", flush=True)
    ratio = statistics.median(run["ratio"] for run in runs)
    return {"queries": args.queries, "runs": runs, "median_ratio": ratio,
            "target": f"< {WORKERS_TARGET}", "met": ratio < WORKERS_TARGET}


def print_server_warnings(work: Path, lines: int = 12) -> None:
    """The last warning and error lines of every server's log (Xhuma logs no patient data), to show why a request
    failed."""
    for log in sorted(work.rglob("*.log")):
        found = [line for line in log.read_text(errors="replace").splitlines()
                 if re.search(r"warning|error|exception", line, re.IGNORECASE)]
        for line in found[-lines:]:
            print(f"  {log.name}: {line[:300]}", flush=True)


def main(args: argparse.Namespace) -> int:
    layout = CgroupLayout.detect()
    demographics = ehr_demographics(args.source)
    counts = sorted(args.replicas)
    exchange_numbers = nhs_numbers(args.concurrency + (args.runs * len(counts) + 1) * args.exchanges) if counts else []
    query_numbers = nhs_numbers(8 + args.runs * (SINGLES + args.queries), start=999_500_000) if args.queries else []
    keys = shared_keys()
    database_url = fresh_database(args.database_admin_url, args.database)
    redis_url = f"{args.redis.rstrip('/')}/{args.redis_db}"
    flush_redis(redis_url)
    print(f"cgroup v{layout.version} at {layout.cpu_root}; {machine_load()}; record {args.source.name}; "
          f"GP Connect {args.latency_ms} ms; {args.exchanges} exchanges x {args.runs} runs per replica count, "
          f"concurrency {args.concurrency}", flush=True)
    report: dict[str, Any] = {"record": args.source.name, "gpc_latency_ms": args.latency_ms,
                              "millicores": args.millicores, "reserved_weight": args.reserve,
                              "concurrency": args.concurrency, "exchanges": args.exchanges, "runs": args.runs}
    errors = 0
    try:
        with tempfile.TemporaryDirectory() as temp:
            work = Path(temp)
            data = work / "data"
            data.mkdir()
            write_patients(data, args.source, exchange_numbers)
            write_patients(data, args.query_source, query_numbers)
            with nhs_simulator(data, work, gpc_latency_ms=args.latency_ms) as simulator, \
                    reserved_support(layout, args.reserve):
                settings = {**simulator, **keys, "XHUMA_REDIS_URL": redis_url, "XHUMA_DATABASE_URL": database_url}
                if counts:
                    scale, errors = scale_out(args, layout, work, {**settings, "XHUMA_REDIS_NAMESPACE": "scale"},
                                              exchange_numbers, demographics)
                    report["scale_out"] = scale
                if args.queries:
                    try:
                        report["workers_2"] = workers_batch(
                            args, work, {**settings, "XHUMA_REDIS_NAMESPACE": "workers"}, query_numbers)
                    except SystemExit as failure:  # a failed or unanswered ITI-38: reported, the figures kept
                        print(f"--workers 2: {failure}", flush=True)
                        report["workers_2"] = {"error": str(failure)}
                        errors += 1
                if errors:
                    print_server_warnings(work)
    finally:
        flush_redis(redis_url)
    report["machine"] = machine_load()
    print(json.dumps(report, indent=2))
    for count, ratio in report.get("scale_out", {}).get("ratios", {}).items():
        print(ratio_line(count, ratio))
    if "median_ratio" in report.get("workers_2", {}):
        workers = report["workers_2"]
        print(f"--workers 2: {args.queries} concurrent cold ITI-38 / one: {workers['median_ratio']:.2f}x "
              f"(target {workers['target']}: {'met' if workers['met'] else 'MISSED'})")
    if args.quick:
        print("smoke run (--quick): too few exchanges for the figures to be compared with the targets")
    print(f"errors: {errors}")
    return 1 if errors else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    records = packaged_data_dir() / "gpconnect" / "uclh-xhuma"
    parser.add_argument("--runs", type=int, default=3, help="runs per replica count (the median is reported)")
    parser.add_argument("--exchanges", type=int, default=100, help="cold exchanges per run")
    parser.add_argument("--concurrency", type=int, default=48, help="exchanges in flight")
    parser.add_argument("--replicas", type=int, nargs="*", default=[1, 2, 3],
                        help="replica counts to compare (none: skip the scale-out part)")
    parser.add_argument("--millicores", type=int, default=250, help="CPU limit per replica")
    parser.add_argument("--latency-ms", type=int, default=300, help="GP Connect latency")
    parser.add_argument("--no-reserve", dest="reserve", action="store_false",
                        help="give the benchmark's groups the default CPU weight (share the machine with other work)")
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

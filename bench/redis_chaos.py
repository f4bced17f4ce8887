"""Redis faults under load (issue 15, items 1-3): two `xhuma serve` replicas sharing a private redis-server, the NHS
simulator in its own process, and Redis swamped, killed, frozen and brought back.

For each fault it prints the requests, their answers by kind (document / busy / unknown document / other), the
documents wrongly denied (an advertised document answered as unknown: must be 0), the slowest answer, the ITI-39
disclosures in the replicas' audit trails against the documents callers received, and the recovery time after
the fault ends. Replica A ran the ITI-38; replica B is another replica of the deployment that holds nothing.

    .venv/bin/python bench/redis_chaos.py [--requests 300] [--timeout 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from harness import free_port, machine_load, nhs_simulator, xhuma_gateway

from xhuma.ihe.demo import _envelope, iti38_request, iti39_request, mtom
from xhuma.nhs.simulator.patients import DEMO_PATIENT

NHS_OID = "2.16.840.1.113883.2.1.4.1"
HOME = "urn:oid:2.16.840.1.113883.3.9999.1"
REPOSITORY = "2.16.840.1.113883.3.9999.1.1"
UNIQUE_ID_SCHEME = 'identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="'


class RedisServer:
    """redis-server on a spare loopback port, no persistence: killed, restarted on the same port, frozen, thawed."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.workdir = free_port(), workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise SystemExit("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@dataclass
class Tally:
    fault: str
    answers: Counter[str] = field(default_factory=Counter)
    slowest_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, seconds: float) -> None:
        self.answers[kind] += 1
        self.slowest_s = max(self.slowest_s, seconds)

    def summary(self) -> dict[str, Any]:
        return {"fault": self.fault, "requests": sum(self.answers.values()), "answers": dict(self.answers),
                "wrongly_denied": self.answers.get("unknown-document", 0), "slowest_s": round(self.slowest_s, 3),
                **self.notes}


def post(client: httpx.AsyncClient, base: str, path: str, body: bytes, content_type: str) -> Any:
    return client.post(base + path, content=body, headers={"content-type": content_type})


async def advertise(client: httpx.AsyncClient, base: str) -> str | None:
    """ITI-38 for the demo patient: the uniqueId it advertises, or None."""
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery",
                            iti38_request(f"{DEMO_PATIENT}^^^&{NHS_OID}&ISO", HOME))
    response = await post(client, base, "/SOAP/iti38", envelope, "application/soap+xml")
    if UNIQUE_ID_SCHEME not in response.text:
        return None
    return response.text.split(UNIQUE_ID_SCHEME)[1].split('"')[0]


def retrieve_request(unique_id: str) -> tuple[bytes, str]:
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", iti39_request(HOME, REPOSITORY, unique_id))
    return mtom(envelope)


async def retrieve(client: httpx.AsyncClient, base: str, request: tuple[bytes, str], tally: Tally) -> str:
    started = time.monotonic()
    try:
        response = await post(client, base, "/SOAP/iti39", *request)
        text = response.content.decode("utf-8", "replace")
        if "xop:Include" in text and "RegistryError " not in text:
            kind = "document"
        elif "Busy" in text:
            kind = "busy"
        elif "XDSDocumentUniqueIdError" in text:
            kind = "unknown-document"
        else:
            kind = f"other-{response.status_code}"
    except httpx.HTTPError as error:
        kind = f"transport-{type(error).__name__}"
    tally.add(kind, time.monotonic() - started)
    return kind


async def spread(client: httpx.AsyncClient, base: str, request: tuple[bytes, str], tally: Tally, count: int,
                 seconds: float) -> None:
    """``count`` ITI-39s started evenly over ``seconds``."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(retrieve(client, base, request, tally)))
        await asyncio.sleep(seconds / count)
    await asyncio.gather(*tasks)


async def until(client: httpx.AsyncClient, base: str, request: tuple[bytes, str], probes: Tally,
                limit: float = 30) -> float:
    """Seconds until an ITI-39 on ``base`` returns the document (each attempt tallied in ``probes``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if await retrieve(client, base, request, probes) == "document":
            return round(time.monotonic() - started, 3)
        await asyncio.sleep(0.05)
    return float("inf")


def disclosures(workdirs: list[Path]) -> int:
    """ITI-39 success events in the replicas' SQLite audit trails."""
    total = 0
    for workdir in workdirs:
        with contextlib.closing(sqlite3.connect(workdir / "xhuma-audit.db")) as db:
            total += db.execute("SELECT count(*) FROM audit_event WHERE \"transaction\" = 'ITI-39' "
                                "AND outcome = 'success'").fetchone()[0]
    return total


def token_requests(workdir: Path) -> int:
    with contextlib.closing(sqlite3.connect(workdir / "xhuma-audit.db")) as db:
        return int(db.execute("SELECT count(*) FROM audit_event WHERE \"transaction\" = 'PDS' "
                              "AND details LIKE '%oauth-token%'").fetchone()[0])


@contextlib.contextmanager
def deployment(work: Path, redis: RedisServer, simulator: dict[str, str], timeout: float) -> Iterator[list[str]]:
    keys = {"XHUMA_CACHE_KEYS": "chaos:" + base64.b64encode(os.urandom(32)).decode(),
            "XHUMA_AUDIT_HMAC_KEY": secrets.token_urlsafe(32)}
    settings = {**simulator, **keys, "XHUMA_REDIS_URL": redis.url, "XHUMA_REDIS_TIMEOUT_SECONDS": timeout,
                "XHUMA_DEMOGRAPHICS_MATCH": "off"}
    for name in ("a", "b"):
        (work / name).mkdir(exist_ok=True)
    with xhuma_gateway(work / "a", name="a", **settings) as a, xhuma_gateway(work / "b", name="b", **settings) as b:
        yield [a, b]


async def run_fault(name: str, work: Path, simulator: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    workdir = work / name
    workdir.mkdir()
    redis = RedisServer(workdir)
    redis.start()
    tally = Tally(name)
    limits = httpx.Limits(max_connections=args.requests + 10, max_keepalive_connections=args.requests + 10)
    try:
        with deployment(workdir, redis, simulator, args.timeout) as (a, b):
            async with httpx.AsyncClient(limits=limits, timeout=60) as client:
                if name == "redis-down-before-iti38":
                    redis.kill()
                    tokens_before = token_requests(workdir / "a")
                unique_id = await advertise(client, a)
                if unique_id is None:
                    tally.notes["iti38"] = "not advertised (busy)"
                    return tally.summary()
                request = retrieve_request(unique_id)
                received_before = disclosures([workdir / "a", workdir / "b"])
                if name == "burst":
                    await asyncio.gather(*(retrieve(client, b, request, tally) for _ in range(args.requests)))
                elif name == "redis-killed":
                    redis.kill()
                    await spread(client, a, request, tally, args.requests // 2, 2.0)
                    await spread(client, b, request, tally, args.requests // 2, 2.0)
                    tally.notes["note"] = "B holds nothing: busy is the right answer there"
                elif name == "redis-frozen":
                    redis.freeze()
                    thawed = False
                    try:
                        await spread(client, a, request, tally, args.requests, 2.0)
                        started = time.monotonic()
                        await client.get(a + "/health/ready")
                        tally.notes["ready_probe_s"] = round(time.monotonic() - started, 3)
                        redis.thaw()
                        thawed = True
                        ready_started = time.monotonic()
                        while (await client.get(a + "/health/ready")).json()["status"] != "ready":
                            await asyncio.sleep(0.05)
                        tally.notes["recovery_ready_s"] = round(time.monotonic() - ready_started, 3)
                    finally:
                        if not thawed:
                            redis.thaw()
                elif name == "redis-restarted-empty":
                    await retrieve(client, b, retrieve_request("1.2.3.4.5.6.7"), Tally("warm"))  # B knows Redis
                    redis.kill()
                    redis.start()  # same port, empty: the advertised document is gone from Redis
                    started = time.monotonic()
                    await asyncio.gather(spread(client, a, request, tally, args.requests // 2, 2.0),
                                         spread(client, b, request, tally, args.requests // 2, 2.0))
                    probes = Tally("recovery")
                    tally.notes["recovery_other_replica_s"] = round(
                        time.monotonic() - started + await until(client, b, request, probes), 3)
                    tally.notes["other_replica_answers_while_recovering"] = dict(probes.answers)
                    tally.answers["unknown-document"] += probes.answers.get("unknown-document", 0)
                    tally.notes["note"] = "B answers busy until A, which stored the document, has handed it back"
                elif name == "redis-down-before-iti38":
                    await spread(client, a, request, tally, args.requests, 2.0)
                    tally.notes["pds_token_requests_during_outage"] = token_requests(workdir / "a") - tokens_before
                    redis.start()  # same port, empty
                    probes = Tally("recovery")
                    tally.notes["recovery_other_replica_s"] = await until(client, b, request, probes)
                    # B cannot know that A alone holds it until A has handed it back (within a bypass period).
                    tally.notes["other_replica_answers_while_recovering"] = dict(probes.answers)
                    tally.answers["unknown-document"] += probes.answers.get("unknown-document", 0)
                recovery = tally.notes.get("other_replica_answers_while_recovering", {})
                received = tally.answers.get("document", 0) + int(recovery.get("document", 0))
                tally.notes["audit_disclosures"] = disclosures([workdir / "a", workdir / "b"]) - received_before
                tally.notes["callers_received"] = received
    finally:
        if redis.process is not None:
            redis.kill()
    return tally.summary()


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        with nhs_simulator(None, work) as simulator:
            for fault in ("burst", "redis-killed", "redis-frozen", "redis-restarted-empty", "redis-down-before-iti38"):
                results.append(asyncio.run(run_fault(fault, work, simulator, args)))
    print(json.dumps({"timeout_s": args.timeout, "faults": results, "machine": machine_load()}, indent=2))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--timeout", type=float, default=1.0, help="XHUMA_REDIS_TIMEOUT_SECONDS")
    outcome = main(parser.parse_args())
    raise SystemExit(1 if any(fault["wrongly_denied"] for fault in outcome) else 0)

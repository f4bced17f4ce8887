"""Faults under load, one entry point (issue 15, "Proof"): Redis swamped, killed, frozen and restarted (the faults
of bench/redis_chaos.py, run from here), a private PostgreSQL frozen mid-load, a GP practice whose provider system
fails, and the NHS simulator's fault patients.

For each fault it prints the requests, their answers by kind, the answers that wrongly deny a document or a record
(must be 0), the slowest answer, the audit trail against what callers were told (audit rows, net disclosures,
callers told success) and the recovery time after the fault ends.

    .venv/bin/python bench/chaos.py [--faults postgres-frozen,failing-practice,fault-patients,redis] [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis_chaos
from harness import machine_load, nhs_simulator, xhuma_gateway
from redis_chaos import HOME, NHS_OID, REPOSITORY, UNIQUE_ID_SCHEME, Tally, advertise, retrieve

from xhuma.ihe.demo import _envelope, iti38_request, iti39_request, mtom
from xhuma.nhs.simulator.patients import DEMO_PATIENT, FAULT_PATIENTS, Fault

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the private PostgreSQL of the fault tests
from tests.support.postgres_server import PostgresServer

from xhuma.audit import NOT_DISCLOSED
from xhuma.store.audit import upgrade

REDIS_FAULTS = ("burst", "redis-killed", "redis-frozen", "redis-restarted-empty", "redis-down-before-iti38")
FAILING_PRACTICE = "B82617"  # the simulator's default practice: the demo patient and most sample records
# Fault patients whose trouble is upstream or ours: "no documents" (or "no such patient") would be a wrong answer.
TRANSIENT_FAULTS = frozenset({Fault.PDS_UNAVAILABLE, Fault.PDS_TIMEOUT, Fault.GPC_INTERNAL_ERROR,
                              Fault.GPC_UNAVAILABLE, Fault.GPC_TIMEOUT, Fault.MALFORMED_JSON, Fault.GPC_GZIP_BOMB,
                              Fault.PDS_FLAKY, Fault.GPC_FLAKY})


def iti39(unique_id: str) -> tuple[tuple[bytes, str], str]:
    """An ITI-39 request and its MessageID (each caller's answer is matched with its audit row by it)."""
    request = iti39_request(HOME, REPOSITORY, unique_id)
    envelope, message_id = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", request)
    return mtom(envelope), message_id


async def iti38(client: httpx.AsyncClient, base: str, number: str, tally: Tally) -> str:
    """One ITI-38: documents | no-documents | busy | error | http-5xx | transport-…, tallied."""
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery", iti38_request(f"{number}^^^&{NHS_OID}&ISO", HOME))
    started = time.monotonic()
    try:
        response = await client.post(base + "/SOAP/iti38", content=envelope,
                                     headers={"content-type": "application/soap+xml"})
        text = response.text
        if response.status_code >= 500:
            kind = f"http-{response.status_code}"
        elif UNIQUE_ID_SCHEME in text:
            kind = "documents"
        elif "Busy" in text:
            kind = "busy"
        elif "RegistryError " in text or "<s:Fault" in text or ":Fault>" in text:
            kind = "error"
        else:
            kind = "no-documents"
    except httpx.HTTPError as error:
        kind = f"transport-{type(error).__name__}"
    tally.add(kind, time.monotonic() - started)
    return kind


def sqlite_rows(workdir: Path, transaction: str) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(workdir / "xhuma-audit.db")) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute(
            'SELECT event_id, outcome, message_id, voids FROM audit_event WHERE "transaction" = ?', (transaction,))]


async def postgres_rows(url: str, transaction: str) -> list[dict[str, Any]]:
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await connection.fetch(
            'SELECT event_id, outcome, message_id, voids FROM audit_event WHERE "transaction" = $1', transaction)
    finally:
        await connection.close()
    return [dict(row) for row in rows]


def audit_against_callers(rows: list[dict[str, Any]], told: dict[str, bool]) -> dict[str, int]:
    """Success rows, voids, net disclosures (success not voided), callers told success, and both mismatches."""
    voided = {row["voids"] for row in rows if row["outcome"] == NOT_DISCLOSED}
    net = Counter(row["message_id"] for row in rows if row["outcome"] == "success" and row["event_id"] not in voided)
    yes = {message for message, ok in told.items() if ok}
    return {"audit_success_rows": sum(row["outcome"] == "success" for row in rows), "audit_voids": len(voided),
            "net_disclosures": sum(net.values()), "callers_told_success": len(yes),
            "told_success_without_net_row": sum(1 for message in yes if net.get(message) != 1),
            "net_row_without_told_success": sum(1 for message in net if message not in yes)}


async def postgres_frozen(work: Path, simulator: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """50 EHRs retrieve one document in a loop; the audit PostgreSQL is frozen for 3 s (past the 1 s write deadline)
    and thawed. Every answer must be the document or a retryable busy/failure, and the trail exact."""
    tally = Tally("postgres-frozen")
    server = PostgresServer()
    server.start()
    try:
        await asyncio.to_thread(upgrade, server.url)  # production: `xhuma db upgrade` before start
        workdir = work / "postgres-frozen"
        workdir.mkdir()
        settings = {**simulator, "XHUMA_DATABASE_URL": server.url, "XHUMA_AUDIT_WRITE_TIMEOUT_SECONDS": "1.0",
                    "XHUMA_DEMOGRAPHICS_MATCH": "off"}
        told: dict[str, bool] = {}
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        with xhuma_gateway(workdir, name="gateway", **settings) as base:
            async with httpx.AsyncClient(limits=limits, timeout=120) as client:
                unique_id = await advertise(client, base)
                if unique_id is None:
                    return {**tally.summary(), "iti38": "not advertised"}
                stop = asyncio.Event()
                thawed_at: list[float] = []
                first_document_after_thaw: list[float] = []

                async def ehr() -> None:
                    while not stop.is_set():
                        request, message_id = iti39(unique_id)
                        kind = await retrieve(client, base, request, tally)
                        told[message_id] = kind == "document"
                        if kind == "document" and thawed_at and not first_document_after_thaw:
                            first_document_after_thaw.append(time.monotonic() - thawed_at[0])

                ehrs = [asyncio.create_task(ehr()) for _ in range(args.callers)]
                await asyncio.sleep(0.5)
                server.freeze()
                try:
                    await asyncio.sleep(0.5)
                    started = time.monotonic()
                    await client.get(base + "/health/ready")
                    tally.notes["ready_probe_while_frozen_s"] = round(time.monotonic() - started, 3)
                    await asyncio.sleep(2.5)
                finally:
                    server.thaw()
                    thawed_at.append(time.monotonic())
                await asyncio.sleep(2.0)
                stop.set()
                await asyncio.gather(*ehrs)
                await asyncio.sleep(3.0)  # voids of writes left unacknowledged are committed in the background
        tally.notes.update(audit_against_callers(await postgres_rows(server.url, "ITI-39"), told))
        tally.notes["recovery_s"] = round(first_document_after_thaw[0], 3) if first_document_after_thaw else None
    finally:
        server.stop()
    summary = tally.summary()
    summary["wrongly_denied"] = tally.answers.get("unknown-document", 0)
    return summary


async def simulator_patients(client: httpx.AsyncClient, simulator: dict[str, str]) -> list[dict[str, Any]]:
    base = simulator["XHUMA_PDS_BASE_URL"].split("/pds/")[0]
    patients: list[dict[str, Any]] = (await client.get(base + "/simulator/patients")).json()["patients"]
    return patients


async def failing_practice(work: Path, simulator: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """A GP practice's provider answers 503 to everything while ITI-38s arrive for its patients and for patients
    of other practices; then it recovers. Another practice must never be refused; the failing practice's patients
    get a retryable error (never "no documents"), fast once its breaker is open."""
    tally, other = Tally("failing-practice"), Tally("other-practices")
    workdir = work / "failing-practice"
    workdir.mkdir()
    reset = 5.0
    settings = {**simulator, "XHUMA_BREAKER_RESET_SECONDS": str(reset), "XHUMA_DEMOGRAPHICS_MATCH": "off"}
    simulator_base = simulator["XHUMA_PDS_BASE_URL"].split("/pds/")[0]
    with xhuma_gateway(workdir, name="gateway", **settings) as base:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as client:
            patients = await simulator_patients(client, simulator)
            at_a = [p["nhs_number"] for p in patients if p["practice"] == FAILING_PRACTICE and p["fault"] is None]
            elsewhere = [p["nhs_number"] for p in patients if p["practice"] not in (FAILING_PRACTICE, None)
                         and p["fault"] is None]
            await client.put(f"{simulator_base}/simulator/practices/{FAILING_PRACTICE}/failure", params={"status": 503})
            for _ in range(args.rounds):
                await asyncio.gather(*(iti38(client, base, at_a[i % len(at_a)], tally) for i in range(20)),
                                     *(iti38(client, base, elsewhere[i % len(elsewhere)], other) for i in range(20)))
            metrics = (await client.get(base + "/metrics")).text
            tally.notes["breakers_open"] = [line for line in metrics.splitlines()
                                            if line.startswith("xhuma_breaker_open{")]
            await client.delete(f"{simulator_base}/simulator/practices/{FAILING_PRACTICE}/failure")
            restored = time.monotonic()
            probes = Tally("recovery")
            while time.monotonic() - restored < 60:
                if await iti38(client, base, at_a[0], probes) == "documents":
                    break
                await asyncio.sleep(0.1)
            tally.notes["recovery_s"] = round(time.monotonic() - restored, 3)
            tally.notes["breaker_reset_s"] = reset
            tally.notes["answers_while_recovering"] = dict(probes.answers)
    rows = sqlite_rows(workdir, "ITI-38")
    summary = tally.summary()
    summary["other_practices"] = {"requests": sum(other.answers.values()), "answers": dict(other.answers),
                                  "slowest_s": round(other.slowest_s, 3)}
    # Wrongly denied: a failing practice's patient told "no documents", or another practice's patient refused.
    summary["wrongly_denied"] = tally.answers.get("no-documents", 0) + sum(
        count for kind, count in other.answers.items() if kind != "documents")
    told_success = other.answers.get("documents", 0) + probes.answers.get("documents", 0)
    summary["audit_iti38_success_rows"] = sum(row["outcome"] == "success" for row in rows)
    summary["callers_told_success"] = told_success
    return summary


async def fault_patients(work: Path, simulator: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """ITI-38 for every simulator fault patient, concurrently, round after round, with the demo patient (at the same
    practice as most of them) alongside: no 5xx, no "no documents" for upstream trouble, the demo patient served."""
    tally, demo = Tally("fault-patients"), Tally("demo-patient")
    workdir = work / "fault-patients"
    workdir.mkdir()
    settings = {**simulator, "XHUMA_HTTP_READ_TIMEOUT_SECONDS": "3.0", "XHUMA_DEMOGRAPHICS_MATCH": "off"}
    per_fault: dict[str, Counter[str]] = {}
    with xhuma_gateway(workdir, name="gateway", **settings) as base:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=200)) as client:

            async def one(number: str) -> None:
                kind = await iti38(client, base, number, tally)
                per_fault.setdefault(FAULT_PATIENTS[number].fault.value, Counter())[kind] += 1

            for _ in range(args.rounds):
                await asyncio.gather(*(one(number) for number in FAULT_PATIENTS),
                                     *(iti38(client, base, DEMO_PATIENT, demo) for _ in range(5)))
    rows = sqlite_rows(workdir, "ITI-38")
    summary = tally.summary()
    summary["by_fault"] = {fault: dict(kinds) for fault, kinds in sorted(per_fault.items())}
    summary["demo_patient"] = dict(demo.answers)
    summary["wrongly_denied"] = sum(per_fault.get(fault.value, Counter()).get("no-documents", 0)
                                    for fault in TRANSIENT_FAULTS) + sum(
        count for kind, count in demo.answers.items() if kind != "documents")
    summary["http_5xx"] = sum(count for kind, count in tally.answers.items() if kind.startswith("http-5"))
    summary["audit_iti38_success_rows"] = sum(row["outcome"] == "success" for row in rows)
    # An ITI-38 success event is a disclosure of document metadata: the answers that listed documents.
    summary["callers_told_success"] = tally.answers.get("documents", 0) + demo.answers.get("documents", 0)
    return summary


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    wanted = set(args.faults.split(","))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        with nhs_simulator(None, work) as simulator:
            if "postgres-frozen" in wanted:
                results.append(asyncio.run(postgres_frozen(work, simulator, args)))
            if "failing-practice" in wanted:
                results.append(asyncio.run(failing_practice(work, simulator, args)))
            if "fault-patients" in wanted:
                results.append(asyncio.run(fault_patients(work, simulator, args)))
            if "redis" in wanted:
                for fault in REDIS_FAULTS:
                    results.append(asyncio.run(redis_chaos.run_fault(fault, work, simulator, args)))
    print(json.dumps({"faults": results, "machine": machine_load()}, indent=2))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default="postgres-frozen,failing-practice,fault-patients,redis",
                        help="comma-separated: postgres-frozen, failing-practice, fault-patients, redis")
    parser.add_argument("--requests", type=int, default=300, help="ITI-39s per Redis fault (bench/redis_chaos.py)")
    parser.add_argument("--timeout", type=float, default=1.0, help="XHUMA_REDIS_TIMEOUT_SECONDS for the Redis faults")
    parser.add_argument("--callers", type=int, default=50, help="looping ITI-39 callers while PostgreSQL is frozen")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of concurrent ITI-38s (practice, fault patients)")
    outcome = main(parser.parse_args())
    raise SystemExit(1 if any(fault.get("wrongly_denied") for fault in outcome) else 0)

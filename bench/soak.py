"""What already holds must keep holding (issue 15, "Proof"): one `xhuma serve` on the embedded defaults, JSON logs
at INFO captured to a file, the NHS simulator in its own process.

1. Burst: 400 concurrent cold exchanges (ITI-55, ITI-38, ITI-39 for 400 distinct synthetic patients) and every
   simulator fault patient, a few rounds: HTTP statuses counted, every 5xx printed (must be 0).
2. Soak: 10,000 requests (mostly cached ITI-39, some ITI-55 and ITI-38) with the gateway's resident memory
   (/proc/<pid>/status VmRSS of `xhuma serve` and its audit writer) sampled every 1,000 requests: the series, the
   growth after warm-up (from the 2,000th to the last request) and a verdict against the bound.
3. PHI: the captured log is searched for every NHS number, family and given name and birth date of the patients
   used (from the simulator's own data): the count must be 0.

    .venv/bin/python bench/soak.py [--quick] [--exchanges 400] [--requests 10000] [--bound-mb 20]

Exit status 1 when any answer was a 5xx, a PHI item was found in the log, or the memory bound was exceeded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from harness import iti38_envelope, machine_load, nhs_numbers, nhs_simulator, write_patients, xhuma_gateway
from redis_chaos import UNIQUE_ID_SCHEME, retrieve_request

from xhuma.ihe.demo import _envelope, iti55_request
from xhuma.nhs.simulator.patients import DEMO_PATIENT, FAULT_PATIENTS
from xhuma.nhs.simulator.records import load, packaged_data_dir
from xhuma.records import DemographicQuery

ITI55_ACTION = "urn:hl7-org:v3:PRPA_IN201305UV02:CrossGatewayPatientDiscovery"
SOAP = "application/soap+xml"


class Statuses:
    """HTTP statuses of every answer, and the 5xx answers themselves (transaction, patient index, body head)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.server_errors: list[str] = []

    async def post(self, client: httpx.AsyncClient, base: str, transaction: str, body: bytes,
                   content_type: str) -> httpx.Response | None:
        try:
            response = await client.post(f"{base}/SOAP/{transaction}", content=body,
                                         headers={"content-type": content_type})
        except httpx.HTTPError as error:
            self.counts[f"transport-{type(error).__name__}"] += 1
            return None
        self.counts[str(response.status_code)] += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{transaction} HTTP {response.status_code}: {response.text[:300]!r}")
        return response


def demographics(record: dict[str, Any] | None) -> DemographicQuery:
    """What the EHR knows of a patient: the simulator's PDS record's usual name, birth date and gender."""
    if not record:
        return DemographicQuery()
    names = record.get("name") or [{}]
    name = next((n for n in names if n.get("use") == "usual"), names[0])
    gender = {"male": "M", "female": "F"}.get(str(record.get("gender", "")).lower(), "UN")
    return DemographicQuery(family=name.get("family"), given=tuple(name.get("given") or ())[:1],
                            birth_date=str(record.get("birthDate") or "").replace("-", "") or None, gender=gender)


def phi_patterns(records: dict[str, dict[str, Any] | None]) -> dict[str, re.Pattern[str]]:
    """Every NHS number (any spacing), family and given name and birth date (with or without dashes) of the
    patients used, keyed by a label that names the kind only (printing the item would print PHI)."""
    patterns: dict[str, re.Pattern[str]] = {}
    names: set[str] = set()
    births: set[str] = set()
    for number, record in records.items():
        patterns[f"nhs-number-{len(patterns)}"] = re.compile(rf"{number[:3]}\W?{number[3:6]}\W?{number[6:]}")
        for name in (record or {}).get("name") or []:
            names |= {name.get("family") or "", *(name.get("given") or ())}
        births.add(str((record or {}).get("birthDate") or "").replace("-", ""))
    for patient in FAULT_PATIENTS.values():
        names |= {patient.family, patient.given}
        births.add(patient.birth_date.replace("-", ""))
    for index, name in enumerate(sorted(n for n in names if n)):
        patterns[f"name-{index}"] = re.compile(rf"\b(?:{re.escape(name)}|{re.escape(name.upper())})\b")
    for index, birth in enumerate(sorted(b for b in births if len(b) == 8)):
        patterns[f"birth-date-{index}"] = re.compile(rf"{birth[:4]}-?{birth[4:6]}-?{birth[6:]}")
    return patterns


def phi_found(log: Path, patterns: dict[str, re.Pattern[str]]) -> Counter[str]:
    """Log lines holding each kind of PHI item (counted per line and item, never printed)."""
    found: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        for label, pattern in patterns.items():
            if pattern.search(line):
                found[label.rsplit("-", 1)[0]] += 1
    return found


def server_rss_kib(workdir: Path) -> int:
    """VmRSS of the gateway's processes in KiB: `xhuma serve` and its SQLite audit writer, which both run in
    ``workdir`` (server_process starts the gateway there; the simulator has a directory of its own)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "cwd") != str(workdir):
                continue
            status = (entry / "status").read_text()
        except OSError:
            continue
        total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) if "VmRSS" in status else 0  # type: ignore[union-attr]
    if not total:
        raise SystemExit("could not find the gateway's process")
    return total


async def exchange(client: httpx.AsyncClient, base: str, statuses: Statuses, number: str,
                   known: DemographicQuery) -> str | None:
    """ITI-55, ITI-38 and, when a document was listed, ITI-39: the document's uniqueId, or None."""
    envelope, _ = _envelope(ITI55_ACTION, iti55_request(number, known))
    await statuses.post(client, base, "iti55", envelope, SOAP)
    answer = await statuses.post(client, base, "iti38", iti38_envelope(number), SOAP)
    if answer is None or UNIQUE_ID_SCHEME not in answer.text:
        return None
    unique_id = answer.text.split(UNIQUE_ID_SCHEME)[1].split('"')[0]
    await statuses.post(client, base, "iti39", *retrieve_request(unique_id))
    return unique_id


async def run(base: str, workdir: Path, records: dict[str, dict[str, Any] | None], numbers: list[str],
              args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.exchanges + 50, max_keepalive_connections=args.exchanges + 50)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        burst = Statuses()
        known = {number: demographics(records.get(number)) for number in [*numbers, *FAULT_PATIENTS]}
        unique_ids = await asyncio.gather(*(exchange(client, base, burst, n, known[n]) for n in numbers))
        for _ in range(args.fault_rounds):
            await asyncio.gather(*(exchange(client, base, burst, n, known[n]) for n in FAULT_PATIENTS))
        documents = [unique_id for unique_id in unique_ids if unique_id]

        soak = Statuses()
        rss: list[tuple[int, float]] = [(0, round(server_rss_kib(workdir) / 1024, 1))]
        done = 0
        for _ in range(args.requests // args.sample_every):
            queue = list(range(done, done + args.sample_every))

            async def caller(queue: list[int] = queue) -> None:
                while queue:
                    index = queue.pop()
                    number = numbers[index % len(numbers)]
                    if index % 10 == 0:  # 1 in 10: a (cached) ITI-38
                        await soak.post(client, base, "iti38", iti38_envelope(number), SOAP)
                    elif index % 10 == 5:  # 1 in 10: an ITI-55
                        envelope, _ = _envelope(ITI55_ACTION, iti55_request(number, known[number]))
                        await soak.post(client, base, "iti55", envelope, SOAP)
                    else:  # the rest: a cached document
                        await soak.post(client, base, "iti39", *retrieve_request(documents[index % len(documents)]))

            await asyncio.gather(*(caller() for _ in range(args.concurrency)))
            done += args.sample_every
            rss.append((done, round(server_rss_kib(workdir) / 1024, 1)))
    warm = dict(rss)[args.warm_up] if args.warm_up in dict(rss) else rss[1][1]
    growth = rss[-1][1] - warm
    return {
        "burst": {"exchanges": args.exchanges, "fault_patients": len(FAULT_PATIENTS), "fault_rounds": args.fault_rounds,
                  "documents_retrieved": len(documents), "statuses": dict(burst.counts),
                  "http_5xx": len(burst.server_errors), "5xx_answers": burst.server_errors[:20]},
        "soak": {"requests": done, "concurrency": args.concurrency, "statuses": dict(soak.counts),
                 "http_5xx": len(soak.server_errors), "5xx_answers": soak.server_errors[:20],
                 "rss_mib_by_request": rss, "growth_after_warm_up_mib": round(growth, 1),
                 "growth_after_warm_up_pct": round(100 * growth / warm, 1),
                 "bound": f"growth from request {args.warm_up} to {done} < {args.bound_mb} MiB",
                 "memory_flat": growth < args.bound_mb},
    }


def main(args: argparse.Namespace) -> dict[str, Any]:
    numbers = nhs_numbers(args.exchanges, start=999_300_000)
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        data, gateway = work / "data", work / "gateway"
        data.mkdir()
        gateway.mkdir()
        write_patients(data, args.source, numbers)
        loaded = load(data).patients
        used = [*numbers, *FAULT_PATIENTS, DEMO_PATIENT]  # a superseded record answers with the demo patient's
        records = {number: loaded[number].pds if number in loaded else None for number in used}
        with nhs_simulator(data, work) as simulator:
            with xhuma_gateway(gateway, name="gateway", XHUMA_LOG_FORMAT="json", XHUMA_LOG_LEVEL="INFO",
                               XHUMA_HTTP_READ_TIMEOUT_SECONDS="3.0", **simulator) as base:
                result = asyncio.run(run(base, gateway, records, numbers, args))
        log = gateway / "gateway.log"
        found = phi_found(log, phi_patterns(records))
        result["phi"] = {"log_lines": len(log.read_text(errors="replace").splitlines()),
                         "items_searched": len(phi_patterns(records)), "lines_with_phi": sum(found.values()),
                         "by_kind": dict(found)}
    result["machine"] = machine_load()
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 40 exchanges, 2,000 requests")
    parser.add_argument("--exchanges", type=int, default=400, help="concurrent cold exchanges (distinct patients)")
    parser.add_argument("--fault-rounds", type=int, default=3, help="exchanges per simulator fault patient")
    parser.add_argument("--requests", type=int, default=10_000, help="soak requests")
    parser.add_argument("--sample-every", type=int, default=1_000, help="requests between memory samples")
    parser.add_argument("--warm-up", type=int, default=2_000, help="requests before the memory baseline")
    parser.add_argument("--concurrency", type=int, default=20, help="soak callers at once")
    parser.add_argument("--bound-mb", type=float, default=20.0, help="allowed RSS growth after warm-up (MiB)")
    small_record = packaged_data_dir() / "gpconnect" / "uclh-xhuma" / "9690937278.json"
    parser.add_argument("--source", type=Path, default=small_record, help="GP Connect record copied per patient")
    options = parser.parse_args()
    if options.quick:
        options.exchanges, options.fault_rounds, options.requests = 40, 1, 2_000
        options.sample_every, options.warm_up = 200, 400
    outcome = main(options)
    failed = (outcome["burst"]["http_5xx"] or outcome["soak"]["http_5xx"] or outcome["phi"]["lines_with_phi"]
              or not outcome["soak"]["memory_flat"])
    raise SystemExit(1 if failed else 0)

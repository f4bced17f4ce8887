"""Response compression: bytes and CPU per answer, and cached ITI-39 throughput with and without gzip.

Part 1: ITI-39 answers (MTOM, with the CCD of the demo patient and of the largest sample record) and ITI-38 answers,
taken from a running Xhuma (`xhuma serve` on its embedded defaults, `xhuma simulate` in another process), compressed
as the SOAP endpoints compress them (``xhuma.compression.GzipPolicy``): raw bytes, gzip bytes, ratio and CPU µs per
compression at levels 1, 6 (the default, ``XHUMA_GZIP_LEVEL``) and 9, and the µs an EHR spends decompressing.
Part 2 (``--throughput``): cached ITI-39s per second with p50/p99 over keep-alive connections, without
Accept-Encoding and with ``Accept-Encoding: gzip``, in one run against the same server.

    .venv/bin/python bench/compression.py [--repeat 200] [--throughput] [--requests 4000] [--concurrency 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
from harness import LoadResult, http_post, machine_load, nhs_simulator, request_load, xhuma_gateway
from iti39_throughput import retrieve_request

from xhuma.compression import GZIP, GzipPolicy
from xhuma.config import Settings
from xhuma.ihe.demo import _envelope, iti38_request, iti39_request, mtom
from xhuma.nhs.simulator.patients import DEMO_PATIENT

NHS_OID = "2.16.840.1.113883.2.1.4.1"
HOME = "urn:oid:2.16.840.1.113883.3.9999.1"
REPOSITORY = "2.16.840.1.113883.3.9999.1.1"
UNIQUE_ID_SCHEME = 'identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="'
LARGEST_SAMPLE = "9692136744"  # the largest GP Connect record of the sample set (1.2 MB of FHIR JSON)
LEVELS = (1, 6, 9)
GZIP_MAGIC = b"\x1f\x8b"


def answers(base: str, patient: str) -> dict[str, bytes]:
    """The ITI-38 answer and the ITI-39 answer (MTOM) for one patient, as sent without compression."""
    plain = {"content-type": "application/soap+xml", "accept-encoding": "identity"}
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery", iti38_request(f"{patient}^^^&{NHS_OID}&ISO", HOME))
    query = httpx.post(base + "/SOAP/iti38", content=envelope, headers=plain, timeout=120)
    if UNIQUE_ID_SCHEME not in query.text:
        raise SystemExit(f"ITI-38 offered no document for the patient: {query.text[-300:]}")
    unique_id = query.text.split(UNIQUE_ID_SCHEME)[1].split('"')[0]
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", iti39_request(HOME, REPOSITORY, unique_id))
    body, content_type = mtom(envelope)
    retrieve = httpx.post(base + "/SOAP/iti39", content=body, timeout=120,
                          headers={"content-type": content_type, "accept-encoding": "identity"})
    if "content-encoding" in query.headers or "content-encoding" in retrieve.headers:
        raise SystemExit("the gateway compressed an answer that was asked for without compression")
    return {"ITI-38 answer": query.content, "ITI-39 answer (MTOM)": retrieve.content}


def cpu_us(work: Any, repeat: int) -> float:
    """CPU µs per call of ``work`` (process time, so waiting is not counted)."""
    work()
    started = time.process_time_ns()
    for _ in range(repeat):
        work()
    return (time.process_time_ns() - started) / repeat / 1000


def measure(name: str, body: bytes, repeat: int) -> dict[str, Any]:
    row: dict[str, Any] = {"answer": name, "raw_bytes": len(body)}
    for level in LEVELS:
        policy = GzipPolicy(level=level)
        compressed = policy.compress(body)
        row[f"level_{level}"] = {
            "gzip_bytes": len(compressed),
            "ratio": round(len(body) / len(compressed), 1),
            "compress_cpu_us": round(cpu_us(lambda p=policy: p.compress(body), repeat), 1),
            "decompress_cpu_us": round(cpu_us(lambda c=compressed: zlib.decompress(c, wbits=GZIP), repeat), 1),
        }
    return row


def with_accept_encoding(request: bytes, coding: str) -> bytes:
    head, _, body = request.partition(b"\r\n\r\n")
    return head + f"\r\nAccept-Encoding: {coding}".encode() + b"\r\n\r\n" + body


async def load(base: str, request: bytes, *, requests: int, concurrency: int, gzip_expected: bool) -> LoadResult:
    """``requests`` ITI-39s over ``concurrency`` keep-alive connections; each answer must be a 200 MTOM answer
    (gzip-compressed when ``gzip_expected``: checked by its magic number, and the first one decompressed)."""
    checked = False

    def check(status: int, answer: bytes) -> None:
        nonlocal checked
        if status != 200 or answer.startswith(GZIP_MAGIC) is not gzip_expected:
            raise SystemExit(f"ITI-39: HTTP {status}, not as expected: {answer[:200]!r}")
        if not checked:
            checked = True
            plain = zlib.decompress(answer, wbits=GZIP) if gzip_expected else answer
            if b"xop:Include" not in plain:
                raise SystemExit(f"ITI-39 answer without its document: {plain[:300]!r}")

    return await request_load(base, request, requests=requests, concurrency=concurrency, check=check)


def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"default_level": Settings().gzip_level, "min_bytes": Settings().gzip_min_bytes}
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        with nhs_simulator(None, work) as simulator, \
                xhuma_gateway(work, **simulator, XHUMA_DEMOGRAPHICS_MATCH="off") as base:
            rows = []
            for label, patient in (("demo patient", DEMO_PATIENT), ("largest sample record", LARGEST_SAMPLE)):
                for name, body in answers(base, patient).items():
                    rows.append(measure(f"{name}, {label}", body, args.repeat))
            result["answers"] = rows
            if args.throughput:
                body, content_type, _, _, size = retrieve_request(base)
                host, port = base.removeprefix("http://").split(":")
                request = http_post(host, port, "/SOAP/iti39", body, content_type)
                result["throughput"] = {"document_bytes": size, "requests": args.requests,
                                        "concurrency": args.concurrency}
                for label, sent, expect_gzip in (("identity", request, False),
                                                 ("gzip", with_accept_encoding(request, "gzip"), True)):
                    measured = asyncio.run(load(base, sent, requests=args.requests, concurrency=args.concurrency,
                                                gzip_expected=expect_gzip))
                    result["throughput"][label] = measured.summary()
    result["machine"] = machine_load()
    print_table(result)
    print(json.dumps(result, indent=2))
    return result


def print_table(result: dict[str, Any]) -> None:
    header = f"{'answer':48} {'raw B':>9} " + " ".join(
        f"{'L' + str(level) + ' gzip B':>11} {'ratio':>6} {'µs':>8} {'unzip µs':>9}" for level in LEVELS)
    print(header)
    for row in result["answers"]:
        cells = " ".join(
            f"{row[f'level_{level}']['gzip_bytes']:>11} {row[f'level_{level}']['ratio']:>6} "
            f"{row[f'level_{level}']['compress_cpu_us']:>8} {row[f'level_{level}']['decompress_cpu_us']:>9}"
            for level in LEVELS)
        print(f"{row['answer']:48} {row['raw_bytes']:>9} {cells}")
    print()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200, help="compressions timed per answer and level")
    parser.add_argument("--throughput", action="store_true", help="also cached ITI-39/s without and with gzip")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=10)
    main(parser.parse_args())

"""ITI-39 throughput on a cached document versus a bare FastAPI route returning the same bytes.

Both servers run under uvicorn on loopback in this process; the same load generator (C concurrent clients,
N requests) drives each. Xhuma's figure includes everything an ITI-39 costs: SOAP/MTOM parsing, WS-Addressing,
XUA (optional mode), the cache read and decryption, the audit commit before disclosure, and the MTOM package.
Target: Xhuma reaches at least 50% of the bare route's throughput; p50/p99 latencies are reported.

    .venv/bin/python bench/iti39_throughput.py [--requests 2000] [--concurrency 20] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Response

from xhuma.ihe.demo import _envelope, embedded_xhuma, iti38_request, iti39_request, mtom, soap_parts
from xhuma.nhs.simulator.patients import DEMO_PATIENT

NHS_OID = "2.16.840.1.113883.2.1.4.1"


@asynccontextmanager
async def bare_server(payload: bytes, content_type: str) -> AsyncIterator[str]:
    app = FastAPI()

    @app.post("/SOAP/iti39")
    async def iti39() -> Response:
        return Response(payload, media_type=content_type)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def load(base: str, body: bytes, content_type: str, requests: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as http:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                response = await http.post("/SOAP/iti39", content=body, headers={"content-type": content_type})
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200 or b"xop:Include" not in response.content[:4000]:
                    raise SystemExit(f"ITI-39 failed: HTTP {response.status_code}")

        await worker()  # warm-up request
        latencies.clear()
        remaining = requests
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as temp:
        overrides: dict[str, Any] = {"working_dir": Path(temp), "log_level": "WARNING", "demographics_match": "off"}
        if args.database_url:
            overrides["database_url"] = args.database_url
        async with embedded_xhuma(overrides) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
            home = "urn:oid:2.16.840.1.113883.3.9999.1"
            envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayQuery",
                                    iti38_request(f"{DEMO_PATIENT}^^^&{NHS_OID}&ISO", home))
            query = await http.post("/SOAP/iti38", content=envelope, headers={"content-type": "application/soap+xml"})
            text = query.text
            unique_id = text.split('identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value="')[1]
            unique_id = unique_id.split('"')[0]
            envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve",
                                    iti39_request(home, "2.16.840.1.113883.3.9999.1.1", unique_id))
            body, content_type = mtom(envelope)
            sample = await http.post("/SOAP/iti39", content=body, headers={"content-type": content_type})
            _, attachments = soap_parts(sample)
            document_size = len(next(iter(attachments.values())))
            xhuma = await load(base, body, content_type, args.requests, args.concurrency)
        async with bare_server(sample.content, sample.headers["content-type"]) as bare_base:
            bare = await load(bare_base, body, content_type, args.requests, args.concurrency)
    result = {
        "document_bytes": document_size,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "xhuma": xhuma,
        "bare_fastapi": bare,
        "throughput_ratio": round(xhuma["requests_per_s"] / bare["requests_per_s"], 2),
        "target": "throughput_ratio >= 0.5",
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--database-url", default=None, help="audit database (default: SQLite in a temp dir)")
    outcome = asyncio.run(main(parser.parse_args()))
    raise SystemExit(0 if outcome["throughput_ratio"] >= 0.5 else 1)

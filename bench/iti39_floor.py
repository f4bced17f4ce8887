"""The floor under bench/iti39_throughput.py: what the essential work of an ITI-39 costs, measured the same way.

A stripped ITI-39 responder in its own process (no settings, metrics, request context, XUA, client checks or
error handling): split the MTOM request, parse the envelope with the same hardened lxml parser and depth probe,
find the MessageID and DocumentUniqueId, decrypt the cached document (AES-256-GCM, 115 KB), commit a 7-column audit
row through Xhuma's SQLite writer process (on disk before the answer), and write the MTOM answer from a template.
It is driven by the same load generator as the bare FastAPI route it is compared with. Its ratio is how close any
Python implementation doing that work can come to the target of 0.5 on this machine.

The "required" responder (``--required``) is the floor plus what the issues require of every ITI-39, done by Xhuma's
own functions: the general MIME and SOAP parsing with the mustUnderstand and WS-Addressing rules, the XUA step
(optional mode, no assertion), the DocumentRequest checks, the encrypted cache and the typed document, the full
audit event with its pseudonym through Xhuma's audit store, and the answer as Xhuma writes it. It leaves out what
the issues do not name: request ids, metrics, tracing, client identification, logging and error handling.

    .venv/bin/python bench/iti39_floor.py [--requests 4000] [--concurrency 10] [--required]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from harness import LoadResult, clean_env, http_load, machine_load, server_process

from xhuma.ihe.demo import _envelope, iti39_request, mtom

HOME = "urn:oid:2.16.840.1.113883.3.9999.1"
REPOSITORY = "1.2.3"
UNIQUE_ID = "2.25.1234567890"
WSA = "{http://www.w3.org/2005/08/addressing}"
XDSB = "{urn:ihe:iti:xds-b:2007}"


Handler = Callable[[bytes, str, dict[str, Any]], Awaitable[tuple[bytes, str]]]


def run_responder(port: int, handle: Handler, *, startup: Callable[[], Awaitable[None]] | None = None,
                  shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve ``handle(body, content_type, scope) -> (answer, media type)`` for POSTs under uvicorn, as plain ASGI;
    any other request gets "ok" (the harness's readiness probe)."""
    import uvicorn

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            if startup is not None:
                await startup()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            if shutdown is not None:
                await shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] != "POST":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        content_type = next(value for name, value in scope["headers"] if name == b"content-type").decode()
        answer, media = await handle(b"".join(chunks), content_type, scope)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", media.encode()), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})

    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def serve(port: int, workdir: Path) -> None:  # the stripped responder (run with --serve)
    import hashlib
    import hmac
    import time

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from lxml import etree

    from xhuma import ids
    from xhuma.store.sqlite_writer import SqliteWriter

    aead = AESGCM(AESGCM.generate_key(256))
    nonce = os.urandom(12)
    header = json.dumps({"unique_id": UNIQUE_ID, "nhs_number": "9690937286", "mime_type": "text/xml"}).encode()
    document = os.urandom(57_500).hex()  # 115 KB, the size of the demo patient's CCD
    plain = len(header).to_bytes(4, "big") + header + document.encode()
    sealed = {UNIQUE_ID: nonce + aead.encrypt(nonce, plain, None)}
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                             collect_ids=False, remove_pis=True)
    too_deep = etree.XPath("boolean(" + "/*" * 65 + ")")
    database = str(workdir / "floor-audit.db")
    connection = sqlite3.connect(database)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE IF NOT EXISTS event (at, tx, outcome, patient, message_id, document, ms)")
    connection.commit()
    connection.close()
    writer = SqliteWriter(database, "INSERT INTO event VALUES (?, ?, ?, ?, ?, ?, ?)")
    key = os.urandom(32)

    async def handle(body: bytes, content_type: str, scope: dict[str, Any]) -> tuple[bytes, str]:
        started = time.perf_counter()
        boundary = content_type.split('boundary="', 1)[1].split('"', 1)[0].encode()
        part = body.split(b"--" + boundary)[1]
        root = etree.fromstring(part[part.index(b"\r\n\r\n") + 4 :].rstrip(b"\r\n"), parser)
        if too_deep(root):
            raise ValueError("too deep")
        message_id = next(block.text for block in root[0] if block.tag == WSA + "MessageID")
        unique_id = next(field.text for request in root[1][0] for field in request
                         if field.tag == XDSB + "DocumentUniqueId")
        opened = aead.decrypt(sealed[unique_id][:12], memoryview(sealed[unique_id])[12:], None)
        length = int.from_bytes(opened[:4], "big")
        meta = json.loads(opened[4 : 4 + length])
        content = memoryview(opened)[4 + length :]
        patient = hmac.new(key, meta["nhs_number"].encode(), hashlib.sha256).hexdigest()
        await writer.write((time.time(), "ITI-39", "success", patient, message_id, unique_id,
                            (time.perf_counter() - started) * 1000))
        boundary_out, content_id, root_id = ids.random_hex(), ids.random_hex(), ids.random_hex()
        envelope = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"'
            ' xmlns:wsa="http://www.w3.org/2005/08/addressing"><env:Header><wsa:Action env:mustUnderstand="true">'
            "urn:ihe:iti:2007:CrossGatewayRetrieveResponse</wsa:Action>"
            f"<wsa:MessageID>urn:uuid:{ids.uuid4()}</wsa:MessageID><wsa:RelatesTo>{message_id}</wsa:RelatesTo>"
            '</env:Header><env:Body><xdsb:RetrieveDocumentSetResponse xmlns:xdsb="urn:ihe:iti:xds-b:2007"'
            ' xmlns:rs="urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0" xmlns:xop="http://www.w3.org/2004/08/xop/include">'
            '<rs:RegistryResponse status="urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"/>'
            f"<xdsb:DocumentResponse><xdsb:HomeCommunityId>{HOME}</xdsb:HomeCommunityId>"
            f"<xdsb:DocumentUniqueId>{unique_id}</xdsb:DocumentUniqueId><xdsb:mimeType>text/xml</xdsb:mimeType>"
            f'<xdsb:Document><xop:Include href="cid:{content_id}"/></xdsb:Document></xdsb:DocumentResponse>'
            "</xdsb:RetrieveDocumentSetResponse></env:Body></env:Envelope>"
        )
        head = (
            f'--{boundary_out}\r\nContent-Type: application/xop+xml; type="application/soap+xml"\r\n'
            f"Content-ID: <{root_id}>\r\n\r\n{envelope}\r\n--{boundary_out}\r\nContent-Type: text/xml\r\n"
            f"Content-ID: <{content_id}>\r\n\r\n"
        ).encode()
        answer = b"".join((head, content, f"\r\n--{boundary_out}--\r\n".encode()))
        media = f'multipart/related; boundary="{boundary_out}"; type="application/xop+xml"; start="<{root_id}>"'
        return answer, media

    run_responder(port, handle)


def serve_required(port: int, workdir: Path) -> None:  # the floor plus what the issues require (--serve-required)
    import time
    from datetime import UTC, datetime

    from xhuma.audit import Auditor
    from xhuma.config import Settings
    from xhuma.ihe import soap, xca_query, xca_retrieve
    from xhuma.ihe.saml import UNIDENTIFIED, SamlVerifier
    from xhuma.ports import CallerIdentity, StoredDocument
    from xhuma.records import dump_document, load_content
    from xhuma.store.audit import SqlAuditStore
    from xhuma.store.cache import MemoryCache
    from xhuma.store.crypto import CacheKeyring, EncryptedCache
    from xhuma.store.keys import CacheKeys

    settings = Settings(working_dir=workdir)  # the embedded defaults (XUA optional)
    verifier = SamlVerifier(settings)
    cache = EncryptedCache(MemoryCache(), CacheKeyring.generate(), context="xhuma")
    store = SqlAuditStore(f"sqlite+aiosqlite:///{workdir / 'required-audit.db'}")
    auditor = Auditor(store, hmac_key=os.urandom(32))
    home_id = HOME.removeprefix("urn:oid:")
    content = os.urandom(57_500).hex().encode()  # 115 KB, the size of the demo patient's CCD
    stored = StoredDocument(
        unique_id=UNIQUE_ID, entry_uuid="urn:uuid:7c4b0a9e-1f5e-4c1b-9a55-0d2f4e8b6a31", nhs_number="9690937286",
        content=content, mime_type="text/xml", hash_sha1="0" * 40, size=len(content), creation_time=datetime.now(UTC),
        service_start=None, service_stop=None, title="Summary of GP record", source_ods="A20047",
    )

    async def startup() -> None:
        await store.migrate()
        await cache.set(CacheKeys.document(UNIQUE_ID), dump_document(stored), 3600)

    async def handle(body: bytes, content_type: str, scope: dict[str, Any]) -> tuple[bytes, str]:
        started = time.perf_counter()
        request = soap.parse_request(body, content_type)
        soap.check_addressing(request.addressing, expected_actions=(xca_retrieve.ACTION_REQUEST,),
                              reply_to_allow_list=())
        if verifier.identify(request.security) is not UNIDENTIFIED:
            raise RuntimeError("the benchmark sends no assertion")
        caller = CallerIdentity(client_address=scope["client"][0])
        item = xca_retrieve.parse_request(request.body)[0]
        if not (item.home_community_id and xca_query.same_community(item.home_community_id, home_id)
                and item.repository_unique_id == REPOSITORY and item.document_unique_id):
            raise RuntimeError("not this community's document")
        raw = await cache.get(CacheKeys.document(item.document_unique_id))
        assert raw is not None
        document = load_content(raw)
        await auditor.record("ITI-39", "success", nhs_number=document.nhs_number, caller=caller,
                             message_id=request.addressing.message_id, document_unique_id=document.unique_id,
                             duration_ms=round((time.perf_counter() - started) * 1000, 1))
        response, attachments = xca_retrieve.build_response(
            [xca_retrieve.RetrievedDocument(item, document)], [], home_community_urn=HOME,
            repository_unique_id=REPOSITORY, mtom=True,
        )
        envelope = soap.envelope(xca_retrieve.ACTION_RESPONSE, response, relates_to=request.addressing.message_id)
        return soap.mtom_package(envelope, attachments, action=xca_retrieve.ACTION_RESPONSE)

    run_responder(port, handle, startup=startup, shutdown=store.close)


def floor_request() -> tuple[bytes, str]:
    """The MTOM ITI-39 request the floor responder answers (its document id is fixed)."""
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve", iti39_request(HOME, REPOSITORY, UNIQUE_ID))
    return mtom(envelope)


def measure_floor(work: Path, *, requests: int, concurrency: int, required: bool = False) -> LoadResult:
    """The floor responder (``required``: the floor plus what the issues require) in its own process, driven by the
    shared load generator."""
    body, content_type = floor_request()
    mode = "--serve-required" if required else "--serve"
    with server_process([sys.executable, __file__, mode, str(work)], clean_env(XHUMA_LOG_LEVEL="WARNING"), work,
                        probe="/", name="floor") as base:
        return asyncio.run(http_load(base, "/SOAP/iti39", body, content_type, requests=requests,
                                     concurrency=concurrency, expect=b"xop:Include"))


def main(args: argparse.Namespace) -> dict[str, Any]:
    body, content_type = floor_request()
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        floor = measure_floor(work, requests=args.requests, concurrency=args.concurrency, required=args.required)
        (work / "payload.bin").write_bytes(os.urandom(116_000))
        bare_args = [sys.executable, str(Path(__file__).with_name("bare_server.py")), "--payload",
                     str(work / "payload.bin"), "--content-type", "multipart/related"]
        with server_process(bare_args, {}, work, name="bare") as bare_base:
            bare = asyncio.run(http_load(bare_base, "/SOAP/iti39", body, content_type, requests=args.requests,
                                         concurrency=args.concurrency, expect=b""))
    result = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "floor": floor.summary(),
        "bare_fastapi": bare.summary(),
        "floor_ratio": round(floor.requests_per_s / bare.requests_per_s, 2),
        "machine": machine_load(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--serve", "--serve-required"):
        # [--serve(-required), WORKDIR, --port, PORT] (server_process adds --port)
        (serve_required if sys.argv[1] == "--serve-required" else serve)(int(sys.argv[4]), Path(sys.argv[2]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("--requests", type=int, default=4000)
        parser.add_argument("--concurrency", type=int, default=10)
        parser.add_argument("--required", action="store_true",
                            help="the floor plus what the issues require of every ITI-39 (see above)")
        main(parser.parse_args())

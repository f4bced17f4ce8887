"""Response compression over real HTTP (Xhuma on the embedded defaults, served by uvicorn on loopback): ITI-38 and
ITI-39 answers are gzip-compressed when the request accepts gzip (RFC 9110 §12.5.3), whole (an MTOM answer with
its parts), with ``Vary: Accept-Encoding``; never when it does not, nor when the answer is small. The console's
routes go through the same acceptance test. A decompression bomb from GP Connect is a retrievable error, never
"no documents".
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from tests.support.soap import (
    ACTION_38,
    ACTION_39,
    NS,
    body_of,
    envelope,
    iti38_body,
    iti39_body,
    mtom_wrap,
    parse_response,
    retrieved_document,
    slot_value,
    unique_id_of,
)

from xhuma.compression import accepts_gzip
from xhuma.ihe.demo import embedded_xhuma
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient

pytestmark = pytest.mark.asyncio(loop_scope="module")

SOAP = "application/soap+xml"


@dataclass
class Gateway:
    http: httpx.AsyncClient  # sends no Accept-Encoding unless a test gives one
    retrieve: bytes  # an ITI-39 request (MTOM) for the demo patient's cached CCD
    retrieve_type: str
    query: bytes  # an ITI-38 request for the demo patient


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Gateway]:
    work = tmp_path_factory.mktemp("compression")
    async with embedded_xhuma({"working_dir": work}) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
        del http.headers["accept-encoding"]  # httpx sends "gzip, deflate" by default
        query = envelope(ACTION_38, iti38_body(nhs=DEMO_PATIENT))
        response = await http.post("/SOAP/iti38", content=query, headers={"content-type": SOAP})
        (entry,) = body_of(parse_response(response)).findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)
        request = iti39_body([(entry.get("home"), slot_value(entry, "repositoryUniqueId"), unique_id_of(entry))])
        retrieve, retrieve_type = mtom_wrap(envelope(ACTION_39, request))
        yield Gateway(http, retrieve, retrieve_type, query)


async def raw_post(gateway: Gateway, path: str, content: bytes, content_type: str,
                   accept_encoding: str | None, *, status: int = 200) -> tuple[httpx.Headers, bytes]:
    """(headers, the body exactly as sent on the wire)."""
    headers = {"content-type": content_type}
    if accept_encoding is not None:
        headers["accept-encoding"] = accept_encoding
    async with gateway.http.stream("POST", path, content=content, headers=headers) as response:
        assert response.status_code == status
        return response.headers, b"".join([chunk async for chunk in response.aiter_raw()])


def as_response(headers: httpx.Headers, body: bytes) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": headers["content-type"]}, content=body)


async def test_iti39_with_gzip_accepted_is_gzip_that_decompresses_to_the_answer_sent_without(
    gateway: Gateway,
) -> None:
    plain_headers, plain = await raw_post(gateway, "/SOAP/iti39", gateway.retrieve, gateway.retrieve_type, None)
    headers, wire = await raw_post(gateway, "/SOAP/iti39", gateway.retrieve, gateway.retrieve_type, "gzip")
    assert headers["content-encoding"] == "gzip"
    assert headers["vary"].lower() == "accept-encoding"
    assert int(headers["content-length"]) == len(wire)
    assert headers["content-type"].startswith("multipart/related")  # the MTOM answer, compressed whole
    answer = gzip.decompress(wire)
    assert len(wire) < len(answer) / 3
    # The same answer: the same length (only message ids and the MIME boundary differ) and the same CCD.
    assert len(answer) == len(plain)
    document = retrieved_document(as_response(headers, answer))
    assert document.startswith(b"<?xml") and b"<ClinicalDocument" in document
    assert document == retrieved_document(as_response(plain_headers, plain))
    assert "content-encoding" not in plain_headers
    assert plain_headers["vary"].lower() == "accept-encoding"


async def test_iti38_answer_is_compressed_when_gzip_is_accepted(gateway: Gateway) -> None:
    headers, wire = await raw_post(gateway, "/SOAP/iti38", gateway.query, SOAP, "gzip, deflate")
    assert headers["content-encoding"] == "gzip"
    message = body_of(parse_response(as_response(headers, gzip.decompress(wire))))
    assert message.findall("rim:RegistryObjectList/rim:ExtrinsicObject", NS)


@pytest.mark.parametrize(
    ("accept_encoding", "compressed"),
    [
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip; q=0.000, br", False),
        ("*;q=0", False),
        ("br, zstd", False),
        ("gzip;q=nonsense", False),
        ("gzip", True),
        ("x-gzip", True),
        ("GZIP;Q=0.5", True),
        ("br;q=1.0, gzip;q=0.1", True),
        ("*", True),
        ("identity;q=0, *", True),
    ],
)
async def test_iti39_is_compressed_only_when_the_request_accepts_gzip(
    gateway: Gateway, accept_encoding: str | None, compressed: bool
) -> None:
    assert accepts_gzip(accept_encoding) is compressed
    headers, wire = await raw_post(gateway, "/SOAP/iti39", gateway.retrieve, gateway.retrieve_type, accept_encoding)
    assert (headers.get("content-encoding") == "gzip") is compressed
    assert (wire[:2] == b"\x1f\x8b") is compressed  # the gzip magic number


async def test_a_small_answer_is_not_compressed(gateway: Gateway) -> None:
    headers, wire = await raw_post(gateway, "/SOAP/iti38", b"<not-soap/>", SOAP, "gzip", status=400)
    assert b"Fault" in wire and len(wire) < 1400
    assert "content-encoding" not in headers


async def test_console_routes_are_compressed_only_when_gzip_is_accepted(gateway: Gateway) -> None:
    accepted = await gateway.http.get("/metrics", headers={"accept-encoding": "gzip"})
    refused = await gateway.http.get("/metrics", headers={"accept-encoding": "gzip;q=0, identity"})
    assert accepted.headers["content-encoding"] == "gzip"
    assert "content-encoding" not in refused.headers  # Starlette's own middleware would have compressed it
    assert b"xhuma_requests_total" in accepted.content and b"xhuma_requests_total" in refused.content


async def test_gzip_level_0_turns_compression_off(tmp_path: Path) -> None:
    async with embedded_xhuma({"working_dir": tmp_path, "gzip_level": 0}) as base, \
            httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post("/SOAP/iti38", content=envelope(ACTION_38, iti38_body(nhs=DEMO_PATIENT)),
                                   headers={"content-type": SOAP, "accept-encoding": "gzip"})
    assert response.status_code == 200 and len(response.content) > 1400
    assert "content-encoding" not in response.headers and "vary" not in response.headers


async def test_a_gzip_bomb_from_gp_connect_is_a_retrievable_error_not_no_documents(tmp_path: Path) -> None:
    settings = {"working_dir": tmp_path, "http_max_response_bytes": 4 * 1024 * 1024, "http_retries": 0}
    async with embedded_xhuma(settings) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
        response = await http.post(
            "/SOAP/iti38", content=envelope(ACTION_38, iti38_body(nhs=fault_patient(Fault.GPC_GZIP_BOMB))),
            headers={"content-type": SOAP})
    assert response.status_code == 200
    message = body_of(parse_response(response))
    assert message.get("status").endswith("Failure")
    (error,) = message.findall("rs:RegistryErrorList/rs:RegistryError", NS)
    assert error.get("errorCode") == "XDSRegistryError"
    assert error.get("codeContext") == "GP record could not be retrieved"
    assert error.get("severity").endswith("Error")

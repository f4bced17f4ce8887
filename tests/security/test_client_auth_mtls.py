"""Only known systems may call the SOAP endpoints (SCAL GEN-05; LESSONS 30): mutual TLS with a real TLS server on
loopback and certificates generated here, and the trusted-proxy path where a forwarded certificate counts only
when the proxy is allow-listed."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from tests.support.pki import Issued, Pki
from tests.support.servers import serve
from tests.support.soap import ACTION_55, SOAP_CT, envelope, iti55_body

from xhuma.app import create_app
from xhuma.config import Settings
from xhuma.errors import SecurityError
from xhuma.security.client_auth import authenticate_client
from xhuma.security.tls import uvicorn_options


def probe_app(settings: Settings) -> FastAPI:
    """The real app plus one route that authenticates the caller the way the SOAP endpoints do."""
    app = create_app(settings)

    @app.post("/probe")
    async def probe(request: Request) -> JSONResponse:
        try:
            client = authenticate_client(request)
        except SecurityError as error:
            return JSONResponse({"error": error.message}, status_code=403)
        return JSONResponse({"subject": client.subject if client else None, "via": client.via if client else None,
                             "address": request.state.client_address})

    return app


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


@pytest.fixture
def server_cert(pki: Pki) -> Issued:
    return pki.issue("xhuma.test", server=True)


def client_context(pki: Pki, client: Issued | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca.cert_file))
    if client is not None:
        context.load_cert_chain(str(client.cert_file), str(client.key_file))
    return context


def mtls_settings(make_settings: Any, pki: Pki, server_cert: Issued, allow: list[str]) -> Settings:
    return make_settings(tls_cert_file=server_cert.cert_file, tls_key_file=server_cert.key_file,
                         tls_client_ca_file=pki.ca.cert_file, client_cert_allow_list=allow)


def test_allow_listed_client_certificate_is_accepted_over_real_tls(make_settings: Any, pki: Pki,
                                                                   server_cert: Issued) -> None:
    epic = pki.issue("Epic Gateway")
    settings = mtls_settings(make_settings, pki, server_cert, [epic.subject])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"https://127.0.0.1:{port}/probe", verify=client_context(pki, epic))
    assert response.status_code == 200, response.text
    assert response.json() == {"subject": epic.subject, "via": "tls", "address": "127.0.0.1"}


def test_allow_list_by_sha256_fingerprint(make_settings: Any, pki: Pki, server_cert: Issued) -> None:
    from xhuma.security.client_auth import fingerprint

    epic = pki.issue("Epic Gateway")
    colon_hex = ":".join(f"{b:02X}" for b in bytes.fromhex(fingerprint(epic.certificate)))
    settings = mtls_settings(make_settings, pki, server_cert, [f"sha256:{colon_hex}"])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"https://127.0.0.1:{port}/probe", verify=client_context(pki, epic))
    assert response.status_code == 200
    assert response.json()["subject"] == epic.subject


def test_client_of_the_trusted_ca_but_not_on_the_allow_list_is_refused(make_settings: Any, pki: Pki,
                                                                        server_cert: Issued) -> None:
    epic, other = pki.issue("Epic Gateway"), pki.issue("Some Other System")
    settings = mtls_settings(make_settings, pki, server_cert, [epic.subject])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"https://127.0.0.1:{port}/probe", verify=client_context(pki, other))
    assert response.status_code == 403
    assert response.json() == {"error": "this client certificate is not allowed"}


def test_client_certificate_from_an_unknown_ca_fails_the_handshake(make_settings: Any, pki: Pki,
                                                                   server_cert: Issued, tmp_path: Path) -> None:
    rogue_ca = Pki(tmp_path / "rogue", name="Rogue CA")
    # Same subject as the allow-listed system, issued by a CA we do not trust.
    impostor = rogue_ca.issue("Epic Gateway")
    settings = mtls_settings(make_settings, pki, server_cert, [impostor.subject])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        with pytest.raises(httpx.TransportError):
            httpx.post(f"https://127.0.0.1:{port}/probe", verify=client_context(pki, impostor))


def test_expired_client_certificate_fails_the_handshake(make_settings: Any, pki: Pki, server_cert: Issued) -> None:
    expired = pki.issue("Epic Gateway", expired=True)
    settings = mtls_settings(make_settings, pki, server_cert, [expired.subject])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        with pytest.raises(httpx.TransportError):
            httpx.post(f"https://127.0.0.1:{port}/probe", verify=client_context(pki, expired))


def test_no_client_certificate_fails_the_handshake_when_an_allow_list_is_configured(
        make_settings: Any, pki: Pki, server_cert: Issued) -> None:
    """Direct mTLS with an allow-list (issue 15, item 8): a client without a certificate is refused by the TLS
    handshake itself (certificate_required), before any HTTP; an allow-listed one is served on the same server."""
    epic = pki.issue("Epic Gateway")
    settings = mtls_settings(make_settings, pki, server_cert, [epic.subject])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        without = raw_exchange(port, client_context(pki, None))
        with_certificate = raw_exchange(port, client_context(pki, epic))
        with pytest.raises(httpx.TransportError):
            httpx.get(f"https://127.0.0.1:{port}/health/live", verify=client_context(pki, None))
    assert without == b""  # the server ended the connection in the handshake: no HTTP at all
    assert with_certificate.startswith(b"HTTP/1.1 200")


def raw_exchange(port: int, context: ssl.SSLContext) -> bytes:
    """GET /health/live over TLS on a raw socket: the answer's first bytes, or b"" when the server ended the
    connection (TLS 1.3: the client's side of the handshake completes first; the server's refusal then arrives as
    an alert or the end of the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /health/live HTTP/1.1\r\nHost: xhuma.test\r\n\r\n")
                return tls.recv(1024)
        except (ssl.SSLError, ConnectionResetError):
            return b""


def test_trusted_proxy_without_a_certificate_completes_the_handshake(make_settings: Any, pki: Pki,
                                                                     server_cert: Issued) -> None:
    """Behind trusted proxies the proxy connects (re-encrypting, without a certificate of its own) and forwards
    the caller's certificate in a header: the handshake must not require one."""
    epic = pki.issue("Epic Gateway")
    settings = make_settings(tls_cert_file=server_cert.cert_file, tls_key_file=server_cert.key_file,
                             tls_client_ca_file=pki.ca.cert_file, client_cert_allow_list=[epic.subject],
                             trusted_proxies=["127.0.0.1"])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"https://127.0.0.1:{port}/probe", verify=client_context(pki, None),
                              headers=forwarded(epic))
    assert response.status_code == 200, response.text
    assert response.json()["via"] == "proxy"


def test_without_handshake_requirement_soap_refuses_a_client_without_certificate_but_health_answers(
        make_settings: Any, pki: Pki, server_cert: Issued) -> None:
    """XHUMA_TLS_REQUIRE_CLIENT_CERT=false (HTTPS health probes that cannot present a certificate): decided per
    endpoint."""
    epic = pki.issue("Epic Gateway")
    settings = mtls_settings(make_settings, pki, server_cert, [epic.subject]).model_copy(
        update={"tls_require_client_cert": False})
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        context = client_context(pki, None)
        refused = httpx.post(f"https://127.0.0.1:{port}/probe", verify=context)
        live = httpx.get(f"https://127.0.0.1:{port}/health/live", verify=context)
    assert refused.status_code == 403
    assert refused.json() == {"error": "a client certificate is required"}
    assert live.status_code == 200


# --- behind a TLS-terminating proxy -------------------------------------------------------------------------------
def forwarded(cert: Issued) -> dict[str, str]:
    return {"X-SSL-Client-Cert": quote(cert.pem), "X-Forwarded-For": "192.0.2.10"}


def proxy_settings(make_settings: Any, pki: Pki, allow: list[str], proxies: list[str]) -> Settings:
    return make_settings(tls_client_ca_file=pki.ca.cert_file, client_cert_allow_list=allow,
                         trusted_proxies=proxies)


def test_spoofed_certificate_header_from_an_untrusted_peer_is_ignored(make_settings: Any, pki: Pki) -> None:
    epic = pki.issue("Epic Gateway")
    settings = proxy_settings(make_settings, pki, [epic.subject], proxies=["10.20.30.0/24"])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"http://127.0.0.1:{port}/probe", headers=forwarded(epic))
    # The header names an allow-listed certificate, but 127.0.0.1 is not a trusted proxy.
    assert response.status_code == 403
    assert response.json() == {"error": "a client certificate is required"}


def test_certificate_forwarded_by_a_trusted_proxy_is_checked_against_the_allow_list(make_settings: Any,
                                                                                     pki: Pki) -> None:
    epic, other = pki.issue("Epic Gateway"), pki.issue("Some Other System")
    settings = proxy_settings(make_settings, pki, [epic.subject], proxies=["127.0.0.1/32"])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        accepted = httpx.post(f"http://127.0.0.1:{port}/probe", headers=forwarded(epic))
        refused = httpx.post(f"http://127.0.0.1:{port}/probe", headers=forwarded(other))
        envoy = httpx.post(f"http://127.0.0.1:{port}/probe",
                           headers={"X-SSL-Client-Cert": f'By=spiffe://x;Hash=00;Cert="{quote(epic.pem)}";DNS=a'})
    assert accepted.status_code == 200
    assert accepted.json() == {"subject": epic.subject, "via": "proxy", "address": "192.0.2.10"}
    assert refused.status_code == 403
    assert envoy.status_code == 200


@pytest.mark.parametrize("case", ["expired", "foreign-ca", "garbage"])
def test_forwarded_certificate_that_is_expired_foreign_or_unreadable_is_refused(
        make_settings: Any, pki: Pki, tmp_path: Path, case: str) -> None:
    epic = pki.issue("Epic Gateway")
    if case == "expired":
        header = quote(pki.issue("Epic Gateway", expired=True).pem)
    elif case == "foreign-ca":
        header = quote(Pki(tmp_path / "rogue", name="Rogue CA").issue("Epic Gateway").pem)
    else:
        header = "-----BEGIN CERTIFICATE-----not a certificate-----END CERTIFICATE-----"
    settings = proxy_settings(make_settings, pki, [epic.subject], proxies=["127.0.0.1"])
    with serve(probe_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"http://127.0.0.1:{port}/probe", headers={"X-SSL-Client-Cert": header})
    assert response.status_code == 403


def test_client_authentication_off_when_nothing_is_configured(make_settings: Any) -> None:
    from fastapi.testclient import TestClient

    settings = make_settings()
    with TestClient(probe_app(settings)) as client:
        response = client.post("/probe")
    assert response.status_code == 200
    assert response.json()["subject"] is None


def test_soap_endpoint_over_real_tls_refuses_a_certificate_not_on_the_allow_list(make_settings: Any, pki: Pki,
                                                                                  server_cert: Issued) -> None:
    epic, other = pki.issue("Epic Gateway"), pki.issue("Some Other System")
    settings = mtls_settings(make_settings, pki, server_cert, [epic.subject])
    with serve(create_app(settings), **uvicorn_options(settings)) as port:
        response = httpx.post(f"https://127.0.0.1:{port}/SOAP/iti55", content=envelope(ACTION_55, iti55_body()),
                              headers={"content-type": SOAP_CT}, verify=client_context(pki, other))
    assert response.status_code in (400, 403, 500)
    assert b"FailedAuthentication" in response.content

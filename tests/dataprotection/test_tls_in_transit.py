"""Issue 7, TLS in transit: `xhuma serve` terminates TLS itself (TLS 1.2 minimum), rediss:// is verified and
encrypted, PostgreSQL sslmode is honoured. Real handshakes on loopback with certificates made in the test."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.dataprotection.helpers import NHS_NUMBER, key_entry
from tests.dataprotection.tls_servers import (
    handshake,
    https_responder,
    legacy_server_context,
    tls11_client_context,
    tls_redis_server,
)
from tests.support.pki import SelfSigned, self_signed
from tests.support.servers import free_port

from xhuma.errors import CacheError
from xhuma.store.audit import SqlAuditStore
from xhuma.store.cache import RedisCache
from xhuma.store.crypto import CacheKeyring, EncryptedCache
from xhuma.store.tls import (
    client_ssl_context,
    minimum_tls_server_context,
    postgres_connect_args,
    serve_tls_options,
)


@pytest.fixture
def cert(tmp_path: Path) -> SelfSigned:
    return self_signed(tmp_path)


def trusting(cert: SelfSigned) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert.cert_file))


# --- xhuma serve ------------------------------------------------------------------------------------------
@pytest.fixture
def tls_gateway(tmp_path: Path, cert: SelfSigned) -> Iterator[int]:
    """`xhuma serve` in a subprocess with XHUMA_TLS_CERT_FILE / XHUMA_TLS_KEY_FILE; yields the port."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("XHUMA_")}
    env.update(XHUMA_TLS_CERT_FILE=str(cert.cert_file), XHUMA_TLS_KEY_FILE=str(cert.key_file))
    process = subprocess.Popen([sys.executable, "-m", "xhuma", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"https://127.0.0.1:{port}/health/live", verify=trusting(cert), timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    process.kill()
                    raise RuntimeError(process.communicate()[0].decode()[-2000:]) from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_terminates_tls_with_the_configured_certificate(tls_gateway: int, cert: SelfSigned) -> None:
    response = httpx.get(f"https://127.0.0.1:{tls_gateway}/health/live", verify=trusting(cert))
    assert response.status_code == 200 and response.json()["status"] == "live"
    with pytest.raises(httpx.TransportError):  # no plaintext HTTP on the TLS port
        httpx.get(f"http://127.0.0.1:{tls_gateway}/health/live", timeout=2)


def test_serve_accepts_tls_1_2_and_refuses_tls_1_1(tls_gateway: int, cert: SelfSigned) -> None:
    tls12_only = ssl.create_default_context(cafile=str(cert.cert_file))
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(tls_gateway, tls12_only) == "TLSv1.2"
    with pytest.raises(ssl.SSLError):
        handshake(tls_gateway, tls11_client_context())


def test_the_tls_1_1_client_of_these_tests_does_complete_a_handshake_with_a_legacy_server(cert: SelfSigned) -> None:
    """Control for the refusal above: this client can speak TLS 1.1 here, so the refusal is the server's floor."""
    with https_responder(legacy_server_context(cert)) as port:
        assert handshake(port, tls11_client_context()) == "TLSv1.1"


def test_serve_context_factory_raises_a_lower_floor_to_tls_1_2_and_keeps_a_higher_one(cert: SelfSigned) -> None:
    legacy = legacy_server_context(cert)
    assert minimum_tls_server_context(None, lambda: legacy).minimum_version == ssl.TLSVersion.TLSv1_2
    strict = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    strict.minimum_version = ssl.TLSVersion.TLSv1_3
    assert minimum_tls_server_context(None, lambda: strict).minimum_version == ssl.TLSVersion.TLSv1_3


def test_serve_tls_options_come_from_settings(make_settings: Any, cert: SelfSigned) -> None:
    assert serve_tls_options(make_settings()) == {}
    options = serve_tls_options(make_settings(tls_cert_file=cert.cert_file, tls_key_file=cert.key_file))
    assert options["ssl_certfile"] == str(cert.cert_file) and options["ssl_keyfile"] == str(cert.key_file)
    assert options["ssl_context_factory"] is minimum_tls_server_context


def test_serve_with_an_unloadable_certificate_exits_3_with_one_line(tmp_path: Path, cert: SelfSigned) -> None:
    other = self_signed(tmp_path, common_name="other")  # a key that does not match the certificate
    env = {name: value for name, value in os.environ.items() if not name.startswith("XHUMA_")}
    env.update(XHUMA_TLS_CERT_FILE=str(cert.cert_file), XHUMA_TLS_KEY_FILE=str(other.key_file))
    result = subprocess.run([sys.executable, "-m", "xhuma", "serve", "--port", str(free_port())], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 3
    assert "XHUMA_TLS_CERT_FILE: certificate and key cannot be loaded" in result.stderr
    assert "Traceback" not in result.stderr


# --- outbound clients ---------------------------------------------------------------------------------------
def test_client_context_refuses_a_server_that_only_speaks_tls_1_1(cert: SelfSigned) -> None:
    context = client_ssl_context(ca_file=cert.cert_file)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    with https_responder(legacy_server_context(cert, maximum=ssl.TLSVersion.TLSv1_1)) as port:
        with pytest.raises(ssl.SSLError):
            handshake(port, context)
    with https_responder(legacy_server_context(cert)) as port:
        assert handshake(port, context) in ("TLSv1.2", "TLSv1.3")


# --- Redis over TLS -------------------------------------------------------------------------------------------
async def test_rediss_url_encrypts_in_transit_and_verifies_the_server(tmp_path: Path, cert: SelfSigned) -> None:
    stranger = self_signed(tmp_path, common_name="stranger")
    keyring = CacheKeyring.from_text(key_entry("k1"))
    with tls_redis_server(cert, tmp_path) as port:
        cache = RedisCache(f"rediss://localhost:{port}/0?ssl_ca_certs={cert.cert_file}", namespace="tls-test")
        try:
            encrypted = EncryptedCache(cache, keyring, context="tls-test")
            await encrypted.set("document:1.2.3", NHS_NUMBER.encode(), 60)
            assert await encrypted.get("document:1.2.3") == NHS_NUMBER.encode()
            kwargs = cache._client.connection_pool.connection_kwargs
            assert kwargs["ssl_min_version"] == ssl.TLSVersion.TLSv1_2
        finally:
            await cache.close()

        untrusted = RedisCache(f"rediss://localhost:{port}/0?ssl_ca_certs={stranger.cert_file}", namespace="tls-test")
        try:
            with pytest.raises(CacheError):
                await untrusted.get("document:1.2.3")
        finally:
            await untrusted.close()


def test_plain_redis_urls_get_no_tls_arguments() -> None:
    cache = RedisCache("redis://127.0.0.1:6379/15")
    assert "ssl_min_version" not in cache._client.connection_pool.connection_kwargs
    asyncio.run(cache.close())


# --- PostgreSQL sslmode -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "verify_mode", "check_hostname"),
    [("verify-full", ssl.CERT_REQUIRED, True), ("verify-ca", ssl.CERT_REQUIRED, False), ("require", ssl.CERT_NONE,
                                                                                          False)],
)
def test_postgres_sslmode_becomes_an_asyncpg_ssl_context(cert: SelfSigned, mode: str, verify_mode: ssl.VerifyMode,
                                                         check_hostname: bool) -> None:
    url, connect_args = postgres_connect_args(
        f"postgresql+asyncpg://xhuma@db.example/xhuma?sslmode={mode}&sslrootcert={cert.cert_file}&application_name=x"
    )
    assert url == "postgresql+asyncpg://xhuma@db.example/xhuma?application_name=x"
    context = connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == verify_mode and context.check_hostname is check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    if verify_mode == ssl.CERT_REQUIRED:
        assert any("localhost" in str(item.get("subject")) for item in context.get_ca_certs())


def test_postgres_url_without_tls_parameters_is_unchanged() -> None:
    url = "postgresql+asyncpg://xhuma@db.example/xhuma"
    assert postgres_connect_args(url) == (url, {})
    assert postgres_connect_args(url + "?sslmode=disable") == (url, {"ssl": False})
    with pytest.raises(ValueError, match="sslmode must be one of"):
        postgres_connect_args(url + "?sslmode=maybe")


async def test_audit_store_honours_sslmode_against_the_real_postgresql(pg_database_url: str) -> None:
    """The test server has no TLS: sslmode=disable connects, verify-full refuses rather than fall back to
    plaintext."""
    plain = SqlAuditStore(pg_database_url + "?sslmode=disable")
    verified = SqlAuditStore(pg_database_url + "?sslmode=verify-full")
    try:
        assert await plain.ping() is True
        assert await verified.ping() is False
    finally:
        await plain.close()
        await verified.close()


async def test_spine_client_refuses_tls_1_1_and_verifies_against_the_spine_ca(
    make_settings: Any, cert: SelfSigned
) -> None:
    """Outbound to NHS services: the GP Connect (Spine Secure Proxy) client built by the NHS transport."""
    from xhuma.nhs.transport import build_http_client

    client = build_http_client(make_settings(spine_ca_bundle=cert.cert_file), mutual_tls=True)
    try:
        with https_responder(legacy_server_context(cert, maximum=ssl.TLSVersion.TLSv1_1)) as port:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"https://localhost:{port}/")
        with https_responder(legacy_server_context(cert)) as port:
            assert (await client.get(f"https://localhost:{port}/")).json() == {"ok": True}
    finally:
        await client.aclose()


@pytest.mark.parametrize("mutual_tls", [False, True])
def test_nhs_api_clients_have_a_tls_1_2_floor(make_settings: Any, cert: SelfSigned, mutual_tls: bool) -> None:
    from xhuma.nhs.transport import build_http_client

    client = build_http_client(make_settings(spine_ca_bundle=cert.cert_file), mutual_tls=mutual_tls)
    for shard in client._transport.shards:  # type: ignore[attr-defined]
        context = shard._pool._ssl_context
        assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    asyncio.run(client.aclose())

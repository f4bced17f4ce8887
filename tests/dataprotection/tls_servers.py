"""Real TLS peers on loopback for the transit tests: a one-line HTTPS responder and a TLS-only redis-server."""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import redis
from tests.support.pki import SelfSigned
from tests.support.servers import free_port


def legacy_server_context(cert: SelfSigned, *, maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A server that would still accept TLS 1.0/1.1 (security level 0), optionally capped at ``maximum``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert.cert_file), str(cert.key_file))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # the deprecated versions are the point of this context
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        if maximum is not None:
            context.maximum_version = maximum
    return context


def tls11_client_context() -> ssl.SSLContext:
    """A client that speaks TLS 1.1 at most (and trusts anything: only the protocol version is under test)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    return context


def handshake(port: int, context: ssl.SSLContext) -> str:
    """The negotiated protocol version, or raise ssl.SSLError / OSError."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        return str(tls.version())


@contextlib.contextmanager
def https_responder(context: ssl.SSLContext) -> Iterator[int]:
    """Answers every HTTPS request with 200 and a JSON body until the block ends; yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.settimeout(5)
                    tls.recv(65536)
                    tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n"
                                b"connection: close\r\n\r\n{\"ok\":true}")
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@contextlib.contextmanager
def tls_redis_server(cert: SelfSigned, directory: Path) -> Iterator[int]:
    """A throw-away redis-server that listens on TLS only (no plain port); yields the TLS port."""
    executable = shutil.which("redis-server")
    assert executable, "redis-server is required for the rediss:// test"
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert.cert_file),
         "--tls-key-file", str(cert.key_file), "--tls-ca-cert-file", str(cert.cert_file),
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(cert.cert_file))
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("TLS redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)

"""Give the ASGI app what uvicorn does not: the peer certificate and the real peer address.

uvicorn verifies client certificates during the TLS handshake (``ssl_ca_certs`` + ``ssl_cert_reqs``) but does
not pass the certificate to the application. These protocol subclasses read it from the connection's
``ssl_object`` once the handshake is complete and add it to every request scope as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings), together with the transport's own peer
address (``scope["extensions"]["xhuma.peer"]``), which no header can change.

They also bound what a connection may hold without sending a request (slowloris): uvicorn closes idle keep-alive
connections (``timeout_keep_alive``) and answers 503 beyond a number of connections (``limit_concurrency``), but
has no limit on the time or the bytes a client may take to send a request's line and headers. Here a connection
whose request head is not complete within ``XHUMA_HEADER_TIMEOUT_SECONDS`` of its opening, or of the first byte
of its next request, is closed, and a head larger than ``XHUMA_MAX_HEADER_BYTES`` is answered 431 and closed.

Both deadlines (the head's, and uvicorn's keep-alive timeout) are timers of a busy event loop: one may run after the
client's bytes have reached this host but before the loop has read them. Closing then would throw away a request
the client sent in time (and, with unread bytes, reset the connection: the client sees a connection reset, not an
answer). So a deadline that finds the peer's bytes waiting unread reads them first and decides after; a client that
really is slow or silent has nothing waiting and is closed as before.

``uvicorn_options(settings)`` returns the keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from xhuma.config import Settings

PEER_EXTENSION = "xhuma.peer"


def scope_header(scope: Any, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) in an ASGI scope's raw headers, as latin-1 text."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def connection_tls_info(transport: asyncio.BaseTransport) -> dict[str, Any] | None:
    """The ASGI TLS extension for one connection, or None on plain HTTP."""
    ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": ssl_object.version(),
        "cipher_suite": cipher[0] if cipher else None,
        # The handshake only completes with a presented certificate when it chained to the CA bundle.
        "client_cert_verified": bool(der) and ssl_object.context.verify_mode != ssl.CERT_NONE,
    }


class ConnectionInfoApp:
    """ASGI wrapper for one connection: adds the TLS extension and the transport peer to each scope (built once per
    connection; each request's scope gets its own copy of the extensions)."""

    def __init__(self, app: Any, *, peer: tuple[str, int] | None, tls: dict[str, Any] | None) -> None:
        self.app = app
        self.peer = peer
        self.tls = tls
        self._extensions: dict[str, Any] = {PEER_EXTENSION: {"address": peer[0] if peer else None}}
        if tls is not None:
            self._extensions["tls"] = tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            given = scope.get("extensions")
            if given:
                extensions = {**given, **self._extensions}
                if self.tls is None:
                    extensions.pop("tls", None)
            else:
                extensions = self._extensions.copy()
            scope["extensions"] = extensions
        await self.app(scope, receive, send)


@dataclass(frozen=True, slots=True)
class RequestHeadLimits:
    timeout_seconds: float
    max_bytes: int


_head_limits: RequestHeadLimits | None = None


def request_head_limits() -> RequestHeadLimits:
    """The limits of this process: set by ``uvicorn_options``; a worker process uvicorn started reads the same
    settings (environment, configuration file) as its parent did."""
    global _head_limits
    if _head_limits is None:
        from xhuma.config import load_settings

        settings = load_settings()
        _head_limits = RequestHeadLimits(settings.header_timeout_seconds, settings.max_header_bytes)
    return _head_limits


_HEAD_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                   b"content-length: 31\r\nconnection: close\r\n\r\nRequest header fields too large")


if sys.platform != "win32":
    from fcntl import ioctl
    from termios import FIONREAD

# A deadline that finds the peer's bytes unread is put off this many times (one loop pass each) at most, so a peer
# that never stops sending cannot hold it off; and for this long each time, so the loop reads them in between.
LATE_READ_RETRIES = 10
LATE_READ_DELAY_SECONDS = 0.001


def peer_bytes_unread(transport: asyncio.BaseTransport) -> int:
    """Bytes the peer has sent that the kernel holds for this connection and the event loop has not read yet (0
    when reading is paused: they are not due to be read; or when not known)."""
    if sys.platform == "win32":  # pragma: no cover - Xhuma is served on POSIX
        return 0
    is_reading = getattr(transport, "is_reading", None)
    if transport.is_closing() or (is_reading is not None and not is_reading()):
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        waiting: int = struct.unpack("i", ioctl(sock.fileno(), FIONREAD, b"\0\0\0\0"))[0]
    except (OSError, ValueError):
        return 0
    return waiting


class _RequestHeadGuard:
    """The request-head limits of one connection. The deadline runs from the connection's opening and from the
    first byte of each further request; it stops when the head is complete (the body and the application's work
    are not limited here). Idle keep-alive time between requests is uvicorn's ``timeout_keep_alive``.

    One timer per connection, not one per request: a head that begins moves the deadline, and the timer, when it
    fires before the deadline it finds (a later head's), is set again for that deadline; a head that completes only
    says so. Setting and cancelling a timer for every request cost a keep-alive connection a heap push and a
    cancelled handle each time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport) -> None:
        self._loop = loop
        self._transport = transport
        self._limits = request_head_limits()
        self._timer: asyncio.TimerHandle | None = None
        self._pending = False  # a request head has begun and is not complete
        self._deadline = 0.0  # the pending head's, on the loop's clock
        self._timer_for = 0.0  # the deadline the timer was set for
        self._bytes = 0

    def start(self) -> None:
        """A request head begins (or may begin: a new connection)."""
        if not self._pending:
            self._pending = True
            self._bytes = 0
            self._deadline = self._loop.time() + self._limits.timeout_seconds
            if self._timer is None:
                self._set_timer()

    def received(self, size: int) -> None:
        """Bytes received while a head is pending (some may turn out to be past its end)."""
        if self._pending:
            self._bytes += size

    def check_size(self) -> None:
        """After parsing: a head still incomplete after more than the limit is answered 431 and closed."""
        if self._pending and self._bytes > self._limits.max_bytes:
            self.close()
            if not self._transport.is_closing():
                self._transport.write(_HEAD_TOO_LARGE)
                self._transport.close()

    def stop(self) -> None:
        """The pending head is complete (the timer, if any, finds nothing pending when it fires)."""
        self._pending = False

    def close(self) -> None:
        """The connection is closing: nothing more to watch."""
        self._pending = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def running(self) -> bool:
        return self._pending

    def _set_timer(self) -> None:
        self._timer_for = self._deadline
        self._timer = self._loop.call_at(self._deadline, self._timed_out)

    def _timed_out(self, late_reads: int = 0) -> None:
        self._timer = None
        if not self._pending:
            return
        if self._timer_for != self._deadline:
            self._set_timer()  # set for an earlier head: this one's deadline is later
            return
        if late_reads < LATE_READ_RETRIES and peer_bytes_unread(self._transport):
            # The client's bytes are here, unread: the loop is late, not the client. Read them, then decide.
            self._timer = self._loop.call_later(LATE_READ_DELAY_SECONDS, self._timed_out, late_reads + 1)
            return
        # No answer: a client this slow to send a request line and headers is not waiting for one (slowloris).
        self._pending = False
        if not self._transport.is_closing():
            self._transport.close()


class XhumaH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = ConnectionInfoApp(self.app, peer=self.client, tls=connection_tls_info(transport))
        self.head_guard = _RequestHeadGuard(self.loop, transport)
        self.head_guard.start()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.transport.is_closing():
            return
        # h11 holds the bytes of an incomplete request head (bounded by h11_max_incomplete_event_size) until a
        # Request event; the head is pending while the peer is IDLE with bytes buffered.
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self.head_guard.start()
        elif self.conn.their_state is not h11.IDLE:
            self.head_guard.stop()

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_guard.close()
        super().connection_lost(exc)

    def timeout_keep_alive_handler(self) -> None:
        keep_alive_due(self, super().timeout_keep_alive_handler)


def keep_alive_due(protocol: Any, close: Callable[[], None], late_reads: int = 0) -> None:
    """uvicorn's keep-alive timer of ``protocol`` is due: ``close`` the idle connection, unless its next request is
    already here, unread (the loop was busy): then the connection is not idle, and the timer is put off for the loop
    to read the request (which cancels the timer, as any request does)."""
    if late_reads < LATE_READ_RETRIES and peer_bytes_unread(protocol.transport):
        protocol.timeout_keep_alive_task = protocol.loop.call_later(
            LATE_READ_DELAY_SECONDS, keep_alive_due, protocol, close, late_reads + 1
        )
        return
    close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is part of uvicorn[standard]
    XhumaHttpToolsProtocol: type[asyncio.Protocol] = XhumaH11Protocol
else:

    class _XhumaHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.app = ConnectionInfoApp(self.app, peer=self.client, tls=connection_tls_info(transport))
            self.head_guard = _RequestHeadGuard(self.loop, transport)
            self.head_guard.start()

        def connection_lost(self, exc: Exception | None) -> None:
            self.head_guard.close()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            # httptools buffers a header until it is complete, with no limit: count what arrives during the head.
            self.head_guard.received(len(data))
            super().data_received(data)
            self.head_guard.check_size()

        # Parser callbacks (llhttp): the head runs from message begin to headers complete.
        def on_message_begin(self) -> None:
            self.head_guard.start()
            super().on_message_begin()

        def on_headers_complete(self) -> None:
            self.head_guard.stop()
            super().on_headers_complete()

        def timeout_keep_alive_handler(self) -> None:
            keep_alive_due(self, super().timeout_keep_alive_handler)

    XhumaHttpToolsProtocol = _XhumaHttpToolsProtocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn: our protocol class, no header-based client rewriting, and TLS.

    uvicorn's own proxy-header handling is switched off: it would replace the peer address with whatever
    X-Forwarded-For says for any peer in its default allow-list. Xhuma decides itself, against
    ``XHUMA_TRUSTED_PROXIES`` (see ``client_auth``).
    """
    global _head_limits
    _head_limits = RequestHeadLimits(settings.header_timeout_seconds, settings.max_header_bytes)
    options: dict[str, Any] = {
        "http": "xhuma.security.tls:XhumaHttpToolsProtocol",
        "proxy_headers": False,
        # Connections: idle keep-alive closed, 503 beyond the cap (uvicorn counts open connections, the one asking
        # included, and requests in progress, per process), request heads bounded (above; h11's own limit when
        # it is the parser).
        "timeout_keep_alive": settings.keepalive_timeout_seconds,
        "limit_concurrency": settings.max_connections + 1,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
    if settings.tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file is not None:
            options["ssl_keyfile"] = str(settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            # A presented certificate must chain to the bundle (else the handshake fails). Callers connecting
            # directly with an allow-list configured must present one: refused in the handshake (REQUIRED). Behind
            # trusted proxies the proxy connects and the certificate arrives in a header, and with
            # XHUMA_TLS_REQUIRE_CLIENT_CERT=false (health probes that cannot present one) it is decided per
            # endpoint (SOAP: required; health probes: not).
            options["ssl_ca_certs"] = str(settings.tls_client_ca_file)
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED if client_cert_required_in_handshake(settings) else (
                ssl.CERT_OPTIONAL
            )
    return options


def client_cert_required_in_handshake(settings: Settings) -> bool:
    return bool(settings.client_cert_allow_list) and not settings.trusted_proxies and settings.tls_require_client_cert

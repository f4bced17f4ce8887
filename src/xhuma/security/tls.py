"""Give the ASGI app what uvicorn does not: the peer certificate and the real peer address.

uvicorn verifies client certificates during the TLS handshake (``ssl_ca_certs`` + ``ssl_cert_reqs``) but does
not pass the certificate to the application. These protocol subclasses read it from the connection's
``ssl_object`` once the handshake is complete and add it to every request scope as the ASGI TLS extension
(``scope["extensions"]["tls"]["client_cert_chain"]``, PEM strings), together with the transport's own peer
address (``scope["extensions"]["xhuma.peer"]``), which no header can change.

``uvicorn_options(settings)`` returns the keyword arguments for ``uvicorn.run`` / ``uvicorn.Config``.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

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
    """ASGI wrapper for one connection: adds the TLS extension and the transport peer to each scope."""

    def __init__(self, app: Any, *, peer: tuple[str, int] | None, tls: dict[str, Any] | None) -> None:
        self.app = app
        self.peer = peer
        self.tls = tls

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") in ("http", "websocket"):
            extensions = dict(scope.get("extensions") or {})
            extensions[PEER_EXTENSION] = {"address": self.peer[0] if self.peer else None}
            if self.tls is not None:
                extensions["tls"] = self.tls
            else:
                extensions.pop("tls", None)
            scope["extensions"] = extensions
        await self.app(scope, receive, send)


class XhumaH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.app = ConnectionInfoApp(self.app, peer=self.client, tls=connection_tls_info(transport))


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - httptools is part of uvicorn[standard]
    XhumaHttpToolsProtocol: type[asyncio.Protocol] = XhumaH11Protocol
else:

    class _XhumaHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.app = ConnectionInfoApp(self.app, peer=self.client, tls=connection_tls_info(transport))

    XhumaHttpToolsProtocol = _XhumaHttpToolsProtocol


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for uvicorn: our protocol class, no header-based client rewriting, and TLS.

    uvicorn's own proxy-header handling is switched off: it would replace the peer address with whatever
    X-Forwarded-For says for any peer in its default allow-list. Xhuma decides itself, against
    ``XHUMA_TRUSTED_PROXIES`` (see ``client_auth``).
    """
    options: dict[str, Any] = {
        "http": "xhuma.security.tls:XhumaHttpToolsProtocol",
        "proxy_headers": False,
    }
    if settings.tls_cert_file is not None:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        if settings.tls_key_file is not None:
            options["ssl_keyfile"] = str(settings.tls_key_file)
        if settings.tls_client_ca_file is not None:
            # OPTIONAL: a presented certificate must chain to the bundle (else the handshake fails); whether one is
            # required is decided per endpoint (SOAP: yes; health probes: no).
            options["ssl_ca_certs"] = str(settings.tls_client_ca_file)
            options["ssl_cert_reqs"] = ssl.CERT_OPTIONAL
    return options

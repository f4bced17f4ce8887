"""TLS in transit for the data Xhuma holds: TLS 1.2 as the floor everywhere, and verified peers.

- ``xhuma serve`` with ``XHUMA_TLS_CERT_FILE``/``XHUMA_TLS_KEY_FILE``: ``serve_tls_options`` gives uvicorn the
  certificate and key and an ``ssl_context_factory`` that pins the minimum protocol to TLS 1.2 (whatever the
  Python or OpenSSL defaults). Client-certificate verification is layered on by ``xhuma.security.tls``; the
  factory keeps whatever uvicorn's default context was given (CA bundle, verify mode) and only raises the floor.
- Redis: ``rediss://`` URLs are verified (certificate and host name, redis-py defaults) with TLS 1.2 minimum
  (``redis_tls_options``). A private CA: ``rediss://host:6380/0?ssl_ca_certs=/etc/xhuma/redis-ca.pem``.
- PostgreSQL: libpq-style ``sslmode`` / ``sslrootcert`` / ``sslcert`` / ``sslkey`` in ``XHUMA_DATABASE_URL`` are
  turned into an SSL context for asyncpg (``postgres_connect_args``), e.g.
  ``postgresql://xhuma@db.example.nhs.uk/xhuma?sslmode=verify-full&sslrootcert=/etc/xhuma/pg-ca.pem``.
- Outbound HTTPS to NHS services: ``client_ssl_context`` (TLS 1.2 minimum, system or given CA bundle).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from xhuma.config import Settings

MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2

# libpq sslmode values (https://www.postgresql.org/docs/current/libpq-ssl.html)
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_PG_TLS_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey")


def enforce_minimum_tls(context: ssl.SSLContext) -> ssl.SSLContext:
    """Raise the context's floor to TLS 1.2 (never lowers a stricter one)."""
    if context.minimum_version < MINIMUM_TLS_VERSION:  # MINIMUM_SUPPORTED (-2) included
        context.minimum_version = MINIMUM_TLS_VERSION
    return context


def minimum_tls_server_context(_config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn ``ssl_context_factory``: uvicorn's context (cert, key, CA, verify mode) with TLS 1.2 minimum.

    Module-level so that it pickles for ``--workers N``."""
    return enforce_minimum_tls(default_factory())


def serve_tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments to terminate TLS in ``xhuma serve``; empty when no certificate is set."""
    if settings.tls_cert_file is None:
        return {}
    options: dict[str, Any] = {
        "ssl_certfile": str(settings.tls_cert_file),
        "ssl_context_factory": minimum_tls_server_context,
    }
    if settings.tls_key_file is not None:
        options["ssl_keyfile"] = str(settings.tls_key_file)
    return options


def check_serve_tls(settings: Settings) -> None:
    """Raise ``ConfigurationError`` (one line) when the configured certificate or key cannot be loaded."""
    from xhuma.config import ConfigurationError

    if settings.tls_key_file is not None and settings.tls_cert_file is None:
        raise ConfigurationError("XHUMA_TLS_KEY_FILE is set without XHUMA_TLS_CERT_FILE")
    if settings.tls_cert_file is None:
        return
    for name, path in (("XHUMA_TLS_CERT_FILE", settings.tls_cert_file), ("XHUMA_TLS_KEY_FILE", settings.tls_key_file)):
        if path is not None and not Path(path).is_file():
            raise ConfigurationError(f"{name}: file not found: {path}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    key_file = str(settings.tls_key_file) if settings.tls_key_file else None
    try:
        context.load_cert_chain(str(settings.tls_cert_file), key_file)
    except (ssl.SSLError, OSError) as error:
        problem = error.__class__.__name__
        raise ConfigurationError(f"XHUMA_TLS_CERT_FILE: certificate and key cannot be loaded ({problem})") from None


def client_ssl_context(
    *,
    ca_file: str | Path | None = None,
    cert_file: str | Path | None = None,
    key_file: str | Path | None = None,
    verify: bool = True,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """A client context: the given CA bundle (else the system's), optional client certificate, TLS 1.2+."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.check_hostname = check_hostname
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return enforce_minimum_tls(context)


def redis_tls_options(url: str) -> dict[str, Any]:
    """Extra redis-py arguments for a ``rediss://`` URL (TLS 1.2 minimum); none for plain URLs."""
    if url.startswith("rediss://"):
        return {"ssl_min_version": MINIMUM_TLS_VERSION}
    return {}


def postgres_connect_args(database_url: str) -> tuple[str, dict[str, Any]]:
    """Split libpq TLS parameters off an asyncpg URL: (URL without them, ``connect_args`` for the engine).

    ``require`` encrypts without verifying the server (as libpq does without a root certificate);
    ``verify-ca`` checks the chain; ``verify-full`` checks the chain and the host name — use it in production.
    """
    parts = urlsplit(database_url)
    if not parts.scheme.startswith("postgresql"):
        return database_url, {}
    query = parse_qsl(parts.query, keep_blank_values=True)
    tls = {name: value for name, value in query if name in _PG_TLS_PARAMETERS}
    if not tls:
        return database_url, {}
    rest = [(name, value) for name, value in query if name not in _PG_TLS_PARAMETERS]
    url = urlunsplit(parts._replace(query=urlencode(rest)))
    mode = tls.get("sslmode", "verify-full" if "sslrootcert" in tls else "prefer")
    if mode not in SSL_MODES:
        raise ValueError(f"XHUMA_DATABASE_URL: sslmode must be one of {', '.join(SSL_MODES)}")
    if mode == "disable":
        return url, {"ssl": False}
    if mode in ("allow", "prefer"):
        return url, {"ssl": mode}  # opportunistic: asyncpg's own semantics, no verification
    context = client_ssl_context(
        ca_file=tls.get("sslrootcert"),
        cert_file=tls.get("sslcert"),
        key_file=tls.get("sslkey"),
        verify=mode != "require",
        check_hostname=mode == "verify-full",
    )
    return url, {"ssl": context}


__all__ = [
    "MINIMUM_TLS_VERSION",
    "check_serve_tls",
    "client_ssl_context",
    "enforce_minimum_tls",
    "minimum_tls_server_context",
    "postgres_connect_args",
    "redis_tls_options",
    "serve_tls_options",
]

"""Authenticate the calling system of the SOAP endpoints (SCAL: only known systems may call Xhuma).

Two ways, both ending at the same allow-list (``XHUMA_CLIENT_CERT_ALLOW_LIST``: subject DNs in RFC 4514 form,
or ``sha256:<hex fingerprint>``):

* direct TLS: uvicorn verifies the client certificate against ``XHUMA_TLS_CLIENT_CA_FILE`` in the handshake and
  ``xhuma.security.tls`` hands it to the app as the ASGI TLS extension;
* behind a TLS-terminating proxy: only when the transport peer is one of ``XHUMA_TRUSTED_PROXIES`` is the
  certificate in ``XHUMA_CLIENT_CERT_HEADER`` read; it is then checked for validity, chained to the CA bundle
  (when configured) and matched against the same allow-list. From any other peer the header is ignored:
  its mere presence never authenticates anyone.

``ClientAuthenticator.authenticate(request)`` returns the caller's ``ClientCertificate`` (None when client
authentication is not configured and none was presented) or raises ``SecurityError``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from fastapi import Request

from xhuma.config import Settings
from xhuma.errors import SecurityError
from xhuma.security.tls import PEER_EXTENSION, scope_header

log = structlog.get_logger(__name__)

_XFCC_CERT = re.compile(r'(?:^|;)\s*Cert="?([^";]+)"?', re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """The authenticated calling system, as recorded in the audit trail."""

    subject: str  # RFC 4514
    issuer: str
    fingerprint_sha256: str  # lower-case hex of the DER
    not_after: datetime
    via: str  # "tls" | "proxy"


def fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def describe(certificate: x509.Certificate, via: str) -> ClientCertificate:
    return ClientCertificate(
        subject=certificate.subject.rfc4514_string(),
        issuer=certificate.issuer.rfc4514_string(),
        fingerprint_sha256=fingerprint(certificate),
        not_after=certificate.not_valid_after_utc,
        via=via,
    )


class AllowList:
    """Subject DNs (RFC 4514, either RDN order) and SHA-256 fingerprints (``sha256:`` + hex, colons allowed)."""

    def __init__(self, entries: list[str]) -> None:
        self.fingerprints: set[str] = set()
        self.subjects: list[x509.Name] = []
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            if entry.lower().startswith("sha256:"):
                digest = entry[7:].replace(":", "").strip().lower()
                if not _HEX.match(digest):
                    raise ValueError(f"not a SHA-256 fingerprint: {entry[:20]}...")
                self.fingerprints.add(digest)
            else:
                self.subjects.append(x509.Name.from_rfc4514_string(entry))

    def __bool__(self) -> bool:
        return bool(self.fingerprints or self.subjects)

    def permits(self, certificate: x509.Certificate) -> bool:
        if fingerprint(certificate) in self.fingerprints:
            return True
        subject = certificate.subject
        reversed_subject = x509.Name(list(reversed(subject.rdns)))
        return any(allowed in (subject, reversed_subject) for allowed in self.subjects)


def _load_bundle(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def parse_forwarded_certificate(value: str) -> x509.Certificate:
    """A certificate from a proxy header: URL-encoded PEM (nginx ``$ssl_client_escaped_cert``), Envoy XFCC
    (``...;Cert="<url-encoded PEM>";...``), plain PEM, or base64 DER."""
    text = value.strip()
    match = _XFCC_CERT.search(text)
    if match and "BEGIN" not in text[: match.start()]:
        text = match.group(1)
    text = unquote(text).strip()
    if "-----BEGIN CERTIFICATE-----" in text:
        # Some proxies fold the PEM onto one line with spaces in place of newlines.
        body = text.split("-----BEGIN CERTIFICATE-----", 1)[1].split("-----END CERTIFICATE-----", 1)[0]
        body = "".join(body.split())
        pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(
            body[i : i + 64] for i in range(0, len(body), 64)
        ) + "\n-----END CERTIFICATE-----\n"
        return x509.load_pem_x509_certificate(pem.encode())
    import base64

    return x509.load_der_x509_certificate(base64.b64decode("".join(text.split()), validate=True))


class ClientAuthenticator:
    """Built once per app from the settings; ``authenticate`` runs per request."""

    def __init__(self, settings: Settings) -> None:
        self.allow_list = AllowList(settings.client_cert_allow_list)
        self.ca_file = settings.tls_client_ca_file
        self.header = settings.client_cert_header.lower()
        self._header_bytes = self.header.encode("latin-1")
        self.trusted_proxies = [ipaddress.ip_network(item.strip(), strict=False)
                                for item in settings.trusted_proxies if item.strip()]
        self._store: Store | None = None
        if self.ca_file is not None:
            self._store = Store(_load_bundle(self.ca_file))

    @property
    def enabled(self) -> bool:
        """Client authentication is on when an allow-list or a client CA bundle is configured."""
        return bool(self.allow_list) or self.ca_file is not None

    # --- addresses -----------------------------------------------------------------------------------------
    @staticmethod
    def peer_address(request: Request) -> str | None:
        """The transport peer (set by ``xhuma.security.tls``), else the ASGI client address."""
        extension = (request.scope.get("extensions") or {}).get(PEER_EXTENSION)
        if extension and extension.get("address"):
            return str(extension["address"])
        return request.client.host if request.client else None

    def is_trusted_proxy(self, address: str | None) -> bool:
        if not address or not self.trusted_proxies:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def client_address(self, request: Request) -> str | None:
        """The caller's address for the audit trail: X-Forwarded-For only when the peer is a trusted proxy."""
        peer = self.peer_address(request)
        if self.is_trusted_proxy(peer):
            hops = [hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()]
            # The right-most address our trusted proxies did not add is the one they saw.
            for hop in reversed(hops):
                if not self.is_trusted_proxy(hop):
                    return hop[:64]
        return peer

    # --- certificates --------------------------------------------------------------------------------------
    def _tls_certificate(self, request: Request) -> x509.Certificate | None:
        tls: dict[str, Any] | None = (request.scope.get("extensions") or {}).get("tls")
        if not tls:
            return None
        chain = tls.get("client_cert_chain") or []
        if not chain:
            return None
        return x509.load_pem_x509_certificate(chain[0].encode())

    def _forwarded_header(self, request: Request) -> str | None:
        """The proxy's certificate header, read from the raw ASGI headers (the SOAP endpoints build no header
        mapping for a request)."""
        return scope_header(request.scope, self._header_bytes)

    def _verify_forwarded(self, certificate: x509.Certificate) -> None:
        now = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc:
            raise SecurityError("the forwarded client certificate is not within its validity period")
        if self._store is None:
            return
        verifier = PolicyBuilder().store(self._store).time(now).build_client_verifier()
        try:
            verifier.verify(certificate, [])
        except VerificationError:
            raise SecurityError("the forwarded client certificate does not chain to the trusted CA") from None

    def presented_certificate(self, request: Request) -> ClientCertificate | None:
        """The certificate presented directly or by a trusted proxy (verified), else None."""
        certificate = self._tls_certificate(request)
        if certificate is not None:
            return describe(certificate, "tls")
        forwarded = self._forwarded_header(request)
        if forwarded is None:
            return None
        peer = self.peer_address(request)
        if not self.is_trusted_proxy(peer):
            log.warning("client_cert_header_ignored", reason="peer is not a trusted proxy", peer=peer)
            return None
        try:
            certificate = parse_forwarded_certificate(forwarded)
        except (ValueError, TypeError):
            raise SecurityError("the forwarded client certificate cannot be read") from None
        self._verify_forwarded(certificate)
        return describe(certificate, "proxy")

    def authenticate(self, request: Request) -> ClientCertificate | None:
        """The calling system, or ``SecurityError`` when client authentication is on and it is not allowed."""
        presented = self.presented_certificate(request)
        if not self.enabled:
            return presented
        if presented is None:
            raise SecurityError("a client certificate is required")
        if self.allow_list:
            certificate = self._certificate_of(request, presented)
            if not self.allow_list.permits(certificate):
                log.warning("client_not_allowed", subject=presented.subject, via=presented.via,
                            fingerprint=presented.fingerprint_sha256)
                raise SecurityError("this client certificate is not allowed")
        return presented

    def _certificate_of(self, request: Request, presented: ClientCertificate) -> x509.Certificate:
        if presented.via == "tls":
            certificate = self._tls_certificate(request)
        else:
            forwarded = self._forwarded_header(request)
            assert forwarded is not None  # presented via the proxy header
            certificate = parse_forwarded_certificate(forwarded)
        assert certificate is not None
        return certificate


def get_authenticator(request: Request) -> ClientAuthenticator:
    """The app's authenticator (built once and kept on ``app.state``)."""
    authenticator: ClientAuthenticator | None = getattr(request.app.state, "client_authenticator", None)
    if authenticator is None:
        authenticator = ClientAuthenticator(request.app.state.settings)
        request.app.state.client_authenticator = authenticator
    return authenticator


def authenticate_client(request: Request) -> ClientCertificate | None:
    """For the SOAP endpoints: the calling system (None when not configured) or ``SecurityError``.

    Call it inside the handler (so ``xhuma.ihe.faults`` turns the error into a SOAP Fault), or use it as a
    FastAPI dependency where a plain 403 is wanted. The result also lands on ``request.state.client_cert``.
    """
    authenticator = get_authenticator(request)
    request.state.client_address = authenticator.client_address(request)
    request.state.client_cert = None
    try:
        result = authenticator.authenticate(request)
    except SecurityError:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None and hasattr(metrics, "client_auth_failures"):
            metrics.client_auth_failures.inc()
        raise
    request.state.client_cert = result
    return result


def client_address(request: Request) -> str | None:
    return get_authenticator(request).client_address(request)

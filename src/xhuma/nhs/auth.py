"""Credentials for the NHS services.

PDS (SPEC §5.2): application-restricted access. A signed JWT client assertion (RS512, ``kid`` from settings) is
exchanged at the NHS API platform OAuth token endpoint for a bearer token. The token is kept in the shared cache
(so every replica uses one token) until its expiry minus a margin; each assertion has a fresh ``jti`` and lives at
most 5 minutes.

GP Connect (SPEC §7.2): a new unsigned audit JWT (``alg: none``, trailing dot kept) for every request, with
every claim filled from settings and the caller's XUA identity, whatever shape the user name has (LESSONS 18).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from xhuma import __version__
from xhuma.audit import Auditor
from xhuma.config import Settings
from xhuma.errors import (
    CacheError,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamUnauthorised,
    UpstreamUnavailable,
)
from xhuma.nhs.transport import Upstream
from xhuma.ports import Cache, CallerIdentity
from xhuma.store.keys import CacheKeys

log = structlog.get_logger(__name__)

CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_SECONDS = 300  # NHS API platform: exp at most 5 minutes after now
GPC_JWT_LIFETIME_SECONDS = 300  # GP Connect: exp is exactly iat + 300
SDS_USER_ID = "https://fhir.nhs.uk/Id/sds-user-id"
SDS_ROLE_PROFILE_ID = "https://fhir.nhs.uk/Id/sds-role-profile-id"
ODS_ORGANIZATION_CODE = "https://fhir.nhs.uk/Id/ods-organization-code"


# --- PDS client assertion --------------------------------------------------------------------------------------
def generate_rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """A fresh key pair (the simulator and tests; production keys are provisioned, RSA 4096 recommended)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def private_key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@functools.lru_cache(maxsize=8)
def load_private_key(pem: bytes) -> Any:
    """Parse and validate a PEM private key once per process (validation of an RSA key costs ~70 ms)."""
    return serialization.load_pem_private_key(pem, password=None)


def public_jwk(key: rsa.RSAPublicKey, kid: str) -> dict[str, Any]:
    """The public key as a JWK, as published in the JWKS registered with the API platform."""
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update({"kid": kid, "use": "sig", "alg": "RS512"})
    return jwk


@dataclass(frozen=True)
class ClientAssertionSigner:
    """Builds the RS512 client assertion of SPEC §5.2 step 2."""

    private_key_pem: bytes = field(repr=False)
    kid: str
    api_key: str = field(repr=False)
    token_url: str
    _key: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parse (and validate) the key once: loading a PEM per signature costs ~100 ms of CPU on the event loop.
        object.__setattr__(self, "_key", load_private_key(self.private_key_pem))

    @classmethod
    def from_settings(cls, settings: Settings, *, private_key_pem: bytes | None = None) -> ClientAssertionSigner:
        if private_key_pem is None:
            if settings.pds_private_key_file is None:
                raise UpstreamUnauthorised("PDS private key not configured", service="pds")
            private_key_pem = Path(settings.pds_private_key_file).read_bytes()
        if not settings.pds_kid or settings.pds_api_key is None or not settings.pds_token_url:
            raise UpstreamUnauthorised("PDS kid, API key or token URL not configured", service="pds")
        return cls(private_key_pem, settings.pds_kid, settings.pds_api_key.get_secret_value(), settings.pds_token_url)

    def assertion(self, now: float) -> tuple[str, dict[str, Any]]:
        claims = {
            "iss": self.api_key,
            "sub": self.api_key,
            "aud": self.token_url,
            "jti": str(uuid.uuid4()),  # never reuse a jti
            "iat": int(now),
            "exp": int(now) + ASSERTION_LIFETIME_SECONDS,
        }
        token = jwt.encode(claims, self._key, algorithm="RS512", headers={"kid": self.kid, "typ": "JWT"})
        summary = {"alg": "RS512", "kid": self.kid, "aud": self.token_url, "exp_seconds": ASSERTION_LIFETIME_SECONDS}
        return token, summary


class PdsTokenProvider:
    """Access token for PDS, shared through the cache until ``expires_in - margin`` (LESSONS 14).

    This replica also holds the token in process, so that a Redis outage does not turn every request into a
    token request: one exchange at a time, and at most one per replica while Redis is down (issue 15).
    """

    def __init__(
        self,
        upstream: Upstream,
        signer: ClientAssertionSigner,
        cache: Cache,
        *,
        margin_seconds: int,
        auditor: Auditor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._upstream = upstream
        self._signer = signer
        self._cache = cache
        self._margin = margin_seconds
        self._auditor = auditor
        self._clock = clock
        self._lock = asyncio.Lock()
        # Every replica of one deployment (same token endpoint and key) shares the token; a token of another endpoint
        # (another worker's embedded simulator) is never offered to this one.
        issuer = hashlib.sha256(f"{signer.token_url}\x00{signer.kid}".encode()).hexdigest()[:16]
        self._key = CacheKeys.oauth_token(f"pds:{issuer}")
        self._held: tuple[str, float] | None = None  # (token, expires_at): the in-process tier
        self.fetches = 0  # tokens obtained by this process (observability and tests)

    async def token(self) -> str:
        held = self._held_token()
        if held is not None:
            return held
        cached = await self._cached()
        if cached is not None:
            return cached
        async with self._lock:  # one exchange per replica when many requests find no token together
            held = self._held_token()
            if held is not None:
                return held
            cached = await self._cached()
            if cached is not None:
                return cached
            return await self._exchange()

    def _held_token(self) -> str | None:
        if self._held is not None and self._held[1] - self._margin > self._clock():
            return self._held[0]
        return None

    async def invalidate(self) -> None:
        self._held = None
        try:
            await self._cache.delete(self._key)
        except CacheError as error:
            log.warning("token_invalidate_failed", service="pds", error=str(error))

    async def _cached(self) -> str | None:
        try:
            raw = await self._cache.get(self._key)
        except CacheError:
            return None  # a cache failure never fails the request
        if raw is None:
            return None
        try:
            item = json.loads(raw)
            expires_at = float(item["expires_at"])
            if expires_at - self._margin > self._clock():
                self._held = (str(item["access_token"]), expires_at)
                return self._held[0]
        except (ValueError, KeyError, TypeError):
            pass
        return None

    async def _exchange(self) -> str:
        started = time.perf_counter()
        now = self._clock()
        summary: dict[str, Any] | None = None

        def form() -> dict[str, str]:
            # A new assertion for every attempt: the platform refuses a jti it has seen, and the first attempt may
            # have reached it. Asking for a token twice is harmless (the spare one expires unused), so the request
            # is replayable, but never byte for byte. The assertion is judged by the platform's clock: sign with
            # wall time, keep expiry on our clock.
            nonlocal summary
            assertion, summary = self._signer.assertion(time.time())
            return {
                "grant_type": "client_credentials",
                "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": assertion,
            }

        outcome, error_code = "error", None
        try:
            result = await self._upstream.request(
                "POST",
                self._signer.token_url,
                headers={"Accept": "application/json", "X-Request-ID": str(uuid.uuid4())},
                data=form,
                replayable=True,
            )
            response = result.response
            if response.status_code in (400, 401, 403):
                raise UpstreamUnauthorised(
                    "PDS token request refused", service="pds", status=response.status_code,
                    spine_code=_oauth_error(response),
                )
            if response.status_code != 200:
                raise UpstreamUnavailable("PDS token endpoint failed", service="pds", status=response.status_code)
            try:
                body = response.json()
                access_token = str(body["access_token"])
                expires_in = int(body["expires_in"])  # the API platform sends it as a string, e.g. "599"
            except (ValueError, KeyError, TypeError):
                raise UpstreamInvalidResponse("PDS token response unreadable", service="pds") from None
            self.fetches += 1
            expires_at = now + expires_in
            self._held = (access_token, expires_at)
            ttl = int(expires_in - self._margin)
            if ttl > 0:
                value = json.dumps({"access_token": access_token, "expires_at": expires_at}).encode()
                try:
                    await self._cache.set(self._key, value, ttl)
                except CacheError as error:
                    log.warning("token_cache_failed", service="pds", error=str(error))
            outcome = "success"
            return access_token
        except UpstreamError as error:
            error_code = error.code
            raise
        finally:
            if self._auditor is not None:
                await self._auditor.record(
                    "PDS", outcome, error_code=error_code, jwt_summary=summary,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    details={"operation": "oauth-token"},
                )


def _oauth_error(response: Any) -> str | None:
    try:
        value = response.json().get("error")
    except ValueError:
        return None
    return str(value) if value else None


# --- GP Connect audit JWT --------------------------------------------------------------------------------------
_TITLES = frozenset(
    {"dr", "mr", "mrs", "ms", "miss", "mx", "prof", "professor", "sir", "dame", "rev", "revd", "nurse", "sister"}
)


def practitioner_name(user_name: str | None, user_id: str | None = None) -> dict[str, Any]:
    """A FHIR HumanName from whatever the XUA subject-id holds (LESSONS 18: never crash on an unexpected shape).

    Handles "Family, Given Middle", "Given Middle Family", "Dr Given Family", HL7 v2 XCN "id^Family^Given^..."
    or "Family^Given", e-mail style "given.family@org", a single word, and nothing at all (family falls back to
    the user id, then "UNKNOWN", because the claim must carry a family name).
    """
    text = (user_name or "").strip()
    if "^" in text:
        family, given, prefix = _caret_name(text)
    elif "," in text:
        family, given, prefix = _comma_name(text)
    else:
        family, given, prefix = _spaced_name(text)
    name: dict[str, Any] = {"family": family or (user_id or "").strip() or "UNKNOWN"}
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = prefix
    return name


# (family, given names, prefixes) of a practitioner name, one written form each.
_NameParts = tuple[str | None, list[str], list[str]]


def _caret_name(text: str) -> _NameParts:
    """HL7 v2 XCN ``id^Family^Given^Middle^Suffix^Prefix``, or the short ``Family^Given^Middle^Suffix^Prefix``."""
    parts = [part.strip() for part in text.split("^")]
    if len(parts) >= 3 and (not parts[0] or any(char.isdigit() for char in parts[0])):
        prefix = [parts[5]] if len(parts) > 5 and parts[5] else []
        return parts[1] or None, [part for part in parts[2:4] if part], prefix
    prefix = [parts[4]] if len(parts) > 4 and parts[4] else []
    return parts[0] or None, [part for part in parts[1:3] if part], prefix


def _comma_name(text: str) -> _NameParts:
    """``Family, Dr Given Middle``."""
    family_part, _, given_part = text.partition(",")
    words = _words(given_part)
    return (
        family_part.strip() or None,
        [word for word in words if not _is_title(word)],
        [word for word in words if _is_title(word)],
    )


def _spaced_name(text: str) -> _NameParts:
    """``Dr Given Middle Family``, ``given.family@org`` or a single word."""
    if "@" in text and " " not in text:
        text = re.sub(r"[._]+", " ", text.split("@", 1)[0])
    words = _words(text)
    prefix: list[str] = []
    while words and _is_title(words[0]):
        prefix.append(words.pop(0))
    family = words.pop() if words else None
    return family, words, prefix


def _words(text: str) -> list[str]:
    return [word for word in re.split(r"[\s()]+", text) if word]


def _is_title(word: str) -> bool:
    return word.rstrip(".").lower() in _TITLES


def practitioner_id(caller: CallerIdentity) -> str:
    """A stable local id for the user (SPEC §4.4): the XUA user id, else a hash of name + organisation."""
    if caller.user_id and caller.user_id.strip():
        return caller.user_id.strip()
    basis = f"{caller.user_name or ''}|{caller.organization_id or caller.organization or ''}"
    return "local-" + hashlib.sha256(basis.encode()).hexdigest()[:16]


def gp_connect_claims(settings: Settings, caller: CallerIdentity, audience: str, now: float) -> dict[str, Any]:
    """The claims of SPEC §7.2, from settings and the caller's identity."""
    issuer = settings.gpc_jwt_issuer.rstrip("/")
    user_id = practitioner_id(caller)
    iat = int(now)
    return {
        "iss": settings.gpc_jwt_issuer,
        "sub": user_id,  # must equal requesting_practitioner.id
        "aud": audience,  # the provider's FHIR service root URL from SDS
        "exp": iat + GPC_JWT_LIFETIME_SECONDS,
        "iat": iat,
        "reason_for_request": "directcare",
        "requested_scope": "patient/*.read",
        "requesting_device": {
            "resourceType": "Device",
            "identifier": [{"system": f"{issuer}/Id/device", "value": settings.gpc_from_asid}],
            "model": settings.gpc_device_name,
            "version": __version__,
        },
        "requesting_organization": {
            "resourceType": "Organization",
            "identifier": [{"system": ODS_ORGANIZATION_CODE, "value": settings.gpc_consumer_ods}],
            "name": caller.organization or settings.organisation_name,
        },
        "requesting_practitioner": {
            "resourceType": "Practitioner",
            "id": user_id,
            "name": [practitioner_name(caller.user_name, caller.user_id)],
            "identifier": [
                # No smartcard behind an XUA assertion: SDS ids are UNK (SPEC §4.4).
                {"system": SDS_USER_ID, "value": "UNK"},
                {"system": SDS_ROLE_PROFILE_ID, "value": "UNK"},
                {"system": f"{issuer}/Id/user", "value": user_id},
            ],
        },
    }


def encode_unsigned(claims: dict[str, Any]) -> str:
    """``base64url(header).base64url(payload).`` with ``alg: none`` and the trailing dot kept (SPEC §7.2)."""
    token = jwt.encode(claims, key="", algorithm="none", headers={"typ": "JWT"})
    return token if token.endswith(".") else token + "."


def jwt_summary(claims: dict[str, Any]) -> dict[str, Any]:
    """What the audit trail keeps of the JWT: who, for whom, why; no names."""
    practitioner = claims.get("requesting_practitioner", {})
    organization = claims.get("requesting_organization", {})
    return {
        "iss": claims.get("iss"),
        "sub": claims.get("sub"),
        "aud": claims.get("aud"),
        "iat": claims.get("iat"),
        "exp": claims.get("exp"),
        "reason_for_request": claims.get("reason_for_request"),
        "requested_scope": claims.get("requested_scope"),
        "requesting_practitioner_id": practitioner.get("id"),
        "requesting_organization_ods": next(
            (item.get("value") for item in organization.get("identifier", [])), None
        ),
    }


__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "ClientAssertionSigner",
    "PdsTokenProvider",
    "encode_unsigned",
    "generate_rsa_key",
    "gp_connect_claims",
    "jwt_summary",
    "practitioner_id",
    "practitioner_name",
    "private_key_pem",
    "public_jwk",
]

"""Bearer authentication of the admin API (``/api/*``) and the operator console's data (LESSONS 30).

Two kinds of bearer token, either or both configured:
* static tokens, ``XHUMA_ADMIN_TOKENS`` (compared in constant time, by their SHA-256 digest);
* OIDC access tokens (JWT) signed by a key from ``XHUMA_ADMIN_OIDC_JWKS_URL``, with the configured issuer and
  audience (and, when ``XHUMA_ADMIN_OIDC_ROLE`` is set, that value in the ``roles`` claim).

With neither configured the admin API is closed (403), in every profile. Tokens are only ever read from the
``Authorization`` header, never from a URL. Every refusal is an audit event (``ADMIN``, ``denied``, a reason
code, the route and the caller's address; the subject only of a verified token; never the token).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import structlog
from fastapi import HTTPException, Request

from xhuma.config import Settings
from xhuma.errors import AuditUnavailable
from xhuma.ports import CallerIdentity

log = structlog.get_logger(__name__)

JWKS_CACHE_SECONDS = 300.0
JWKS_MIN_REFRESH_SECONDS = 30.0
OIDC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"]


@dataclass(frozen=True, slots=True)
class AdminPrincipal:
    """Who called the admin API, for the audit trail (never the token itself)."""

    subject: str  # "token:<first 8 hex of its SHA-256>" or the OIDC sub
    method: str  # "token" | "oidc"


class AdminAuthError(Exception):
    def __init__(self, message: str, status: int = 401, *, reason: str = "AdminTokenInvalid",
                 subject: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason  # for the audit trail: a code, never the token
        self.subject = subject  # only when the token itself was verified (e.g. a valid token without the role)


class JwksCache:
    """Fetches the JWKS with the async HTTP client, keeps it for a while, refreshes on an unknown kid."""

    def __init__(self, url: str, client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._client = client
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        client = self._client or httpx.AsyncClient(timeout=5.0)
        try:
            response = await client.get(self.url)
            response.raise_for_status()
            document = response.json()
        finally:
            if self._client is None:
                await client.aclose()
        keys: dict[str, jwt.PyJWK] = {}
        for item in document.get("keys", []):
            if item.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK.from_json(json.dumps(item))
            except jwt.PyJWKError:
                continue
            keys[str(item.get("kid", ""))] = key
        self._keys = keys
        self._fetched_at = time.monotonic()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        age = time.monotonic() - self._fetched_at
        if kid not in self._keys or age > JWKS_CACHE_SECONDS:
            async with self._lock:
                age = time.monotonic() - self._fetched_at
                if (kid not in self._keys and age > JWKS_MIN_REFRESH_SECONDS) or age > JWKS_CACHE_SECONDS:
                    try:
                        await self._fetch()
                    except (httpx.HTTPError, ValueError) as error:
                        log.warning("admin_jwks_fetch_failed", error=type(error).__name__)
        return self._keys.get(kid)


class AdminAuthenticator:
    def __init__(self, settings: Settings, *, http_client: httpx.AsyncClient | None = None) -> None:
        self._digests = [hashlib.sha256(token.get_secret_value().encode()).digest()
                         for token in settings.admin_tokens if token.get_secret_value()]
        self.issuer = settings.admin_oidc_issuer
        self.audience = settings.admin_oidc_audience
        self.role = settings.admin_oidc_role
        self.jwks = JwksCache(settings.admin_oidc_jwks_url, http_client) if settings.admin_oidc_jwks_url else None

    @property
    def configured(self) -> bool:
        return bool(self._digests) or self.jwks is not None

    def _static(self, token: str) -> AdminPrincipal | None:
        digest = hashlib.sha256(token.encode()).digest()
        matched = False
        for candidate in self._digests:  # no early exit: same time whichever token matches
            matched |= hmac.compare_digest(candidate, digest)
        return AdminPrincipal(subject=f"token:{digest.hex()[:8]}", method="token") if matched else None

    async def _oidc(self, token: str) -> AdminPrincipal | None:
        if self.jwks is None or token.count(".") != 2:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if header.get("alg") not in OIDC_ALGORITHMS:
            return None
        key = await self.jwks.key(str(header.get("kid", "")))
        if key is None:
            return None
        options: Any = {"require": ["exp", "iat", "sub"] + (["iss"] if self.issuer else [])
                        + (["aud"] if self.audience else [])}
        try:
            claims = jwt.decode(token, key=key, algorithms=[str(header["alg"])], audience=self.audience,
                                issuer=self.issuer, options=options, leeway=30)
        except jwt.PyJWTError as error:
            log.info("admin_token_rejected", reason=type(error).__name__)
            return None
        if self.role:
            roles = claims.get("roles") or claims.get("realm_access", {}).get("roles") or []
            if self.role not in roles:
                raise AdminAuthError("the token does not carry the admin role", 403, reason="AdminRoleMissing",
                                     subject=str(claims["sub"]))
        return AdminPrincipal(subject=str(claims["sub"])[:128], method="oidc")

    async def authenticate(self, authorization: str | None) -> AdminPrincipal:
        if not self.configured:
            raise AdminAuthError("admin API is disabled: configure XHUMA_ADMIN_TOKENS or XHUMA_ADMIN_OIDC_JWKS_URL",
                                 403, reason="AdminApiDisabled")
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AdminAuthError("bearer token required", reason="AdminTokenMissing")
        principal = self._static(token) or await self._oidc(token)
        if principal is None:
            raise AdminAuthError("invalid bearer token")
        return principal


async def _audit_refusal(request: Request, error: AdminAuthError) -> None:
    """One ``ADMIN``/``denied`` event per refused request. The refusal stands whether or not it could be recorded
    (nothing is disclosed); a failure to record it is logged. Lengths are the audit store's to bound."""
    runtime = getattr(request.app.state, "runtime", None)
    auditor = getattr(runtime, "auditor", None)
    if auditor is None:
        return
    route = request.scope.get("route")
    try:
        await auditor.record(
            "ADMIN", "denied", reason=error.reason, error_code=str(error.status),
            caller=CallerIdentity(user_id=error.subject) if error.subject else None,
            details={"action": "admin-auth", "route": getattr(route, "path", None), "method": request.method},
            client_address=request.client.host if request.client else None,
        )
    except AuditUnavailable:
        log.error("admin_auth_refusal_not_audited", reason=error.reason)


def get_admin_authenticator(request: Request) -> AdminAuthenticator:
    authenticator: AdminAuthenticator | None = getattr(request.app.state, "admin_authenticator", None)
    if authenticator is None:
        authenticator = AdminAuthenticator(request.app.state.settings)
        request.app.state.admin_authenticator = authenticator
    return authenticator


async def require_admin(request: Request) -> AdminPrincipal:
    """FastAPI dependency for every admin route: 401 (with WWW-Authenticate) or 403 when not allowed."""
    try:
        principal = await get_admin_authenticator(request).authenticate(request.headers.get("authorization"))
    except AdminAuthError as error:
        metrics = getattr(request.app.state, "metrics", None)
        if metrics is not None and hasattr(metrics, "admin_auth_failures"):
            metrics.admin_auth_failures.inc()
        await _audit_refusal(request, error)
        headers = {"WWW-Authenticate": 'Bearer realm="xhuma-admin"'} if error.status == 401 else None
        raise HTTPException(error.status, error.message, headers=headers) from None
    request.state.admin = principal
    return principal

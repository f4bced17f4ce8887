"""Response compression: gzip for answers large enough to gain from it, when the request accepts gzip.

One home for whether a request accepts gzip (RFC 9110 §12.5.3: a coding with ``q=0`` is "not acceptable", ``*``
stands for any coding not listed), for the policy (``XHUMA_GZIP_LEVEL``, 0 = off; ``XHUMA_GZIP_MIN_BYTES``) and for
compressing one body. The SOAP endpoints compress their answer where they send it (``xhuma.ihe.endpoints``; an
MTOM answer is compressed whole, since Content-Encoding applies to the HTTP entity, RFC 9110 §8.4); FastAPI's
routes and the NHS simulator go through ``GzipMiddleware``. Figures: ``bench/compression.py``, docs/operations.md.
"""

from __future__ import annotations

import asyncio
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.middleware.gzip import GZipMiddleware, GZipResponder, IdentityResponder
from starlette.types import ASGIApp, Receive, Scope, Send

if TYPE_CHECKING:
    from xhuma.config import Settings

GZIP = 31  # zlib wbits for a gzip member (RFC 1952) rather than a zlib stream
# Above this a body is compressed in a worker thread (zlib lets go of the GIL), not on the event loop.
THREAD_MIN_BYTES = 128 * 1024


def accepts_gzip(accept_encoding: bytes | str | None) -> bool:
    """Whether an Accept-Encoding field value (all of its lines joined by commas) accepts gzip."""
    if not accept_encoding:
        return False  # no header, or an empty one: identity only
    value = accept_encoding.decode("latin-1") if isinstance(accept_encoding, bytes) else accept_encoding
    gzip_weight: float | None = None
    any_weight: float | None = None
    for item in value.split(","):
        coding, *parameters = item.split(";")
        coding = coding.strip().lower()
        weight = 1.0
        for parameter in parameters:
            name, _, given = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    weight = float(given.strip())
                except ValueError:
                    weight = 0.0  # an unreadable weight is not consent
        if coding in ("gzip", "x-gzip"):  # x-gzip: the same coding (RFC 9110 §8.4.1.3)
            gzip_weight = weight if gzip_weight is None else max(gzip_weight, weight)
        elif coding == "*":
            any_weight = weight
    if gzip_weight is not None:
        return gzip_weight > 0
    return any_weight is not None and any_weight > 0


def request_accept_encoding(scope: Scope) -> bytes | None:
    """The request's Accept-Encoding, its lines joined (RFC 9110 §5.3), from an ASGI scope."""
    values = [value for name, value in scope["headers"] if name == b"accept-encoding"]
    if not values:
        return None
    return values[0] if len(values) == 1 else b",".join(values)


@dataclass(frozen=True, slots=True)
class GzipPolicy:
    """``level`` 1-9 (0: never compress; 1 by default, which takes an ITI-39 answer to an eighth of its size for
    about 40% of level 6's CPU: docs/operations.md); bodies smaller than ``min_bytes`` are sent as they are (below
    about one TCP segment there is nothing to gain)."""

    level: int = 1
    min_bytes: int = 1400

    @classmethod
    def from_settings(cls, settings: Settings) -> GzipPolicy:
        return cls(level=settings.gzip_level, min_bytes=settings.gzip_min_bytes)

    @property
    def enabled(self) -> bool:
        return self.level > 0

    def worth_compressing(self, body: bytes) -> bool:
        return self.level > 0 and len(body) >= self.min_bytes

    def compress(self, body: bytes) -> bytes:
        """One gzip member, without a timestamp (the same body always gives the same bytes)."""
        return zlib.compress(body, self.level, wbits=GZIP)

    async def encode(self, body: bytes) -> bytes | None:
        """The gzip of ``body``, or None when it is too small or does not shrink."""
        if not self.worth_compressing(body):
            return None
        if len(body) >= THREAD_MIN_BYTES:
            compressed = await asyncio.to_thread(self.compress, body)
        else:
            compressed = self.compress(body)
        return compressed if len(compressed) < len(body) else None


class GzipMiddleware(GZipMiddleware):
    """Starlette's gzip middleware, consenting only when the request accepts gzip: Starlette's own test takes
    "gzip" anywhere in the header as consent, ``gzip;q=0`` included."""

    def __init__(self, app: ASGIApp, *, policy: GzipPolicy) -> None:
        super().__init__(app, minimum_size=policy.min_bytes, compresslevel=max(policy.level, 1),
                         thread_minimum_size=THREAD_MIN_BYTES)
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.policy.enabled:
            await self.app(scope, receive, send)
            return
        responder: ASGIApp
        if accepts_gzip(request_accept_encoding(scope)):
            responder = GZipResponder(
                self.app, self.minimum_size, compresslevel=self.compresslevel,
                thread_minimum_size=self.thread_minimum_size, exclude_content_types=self.exclude_content_types,
            )
        else:
            responder = IdentityResponder(self.app, self.minimum_size, exclude_content_types=self.exclude_content_types)
        await responder(scope, receive, send)


__all__ = ["GzipMiddleware", "GzipPolicy", "accepts_gzip", "request_accept_encoding"]

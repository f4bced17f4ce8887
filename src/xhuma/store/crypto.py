"""Encryption at rest for everything Xhuma caches, and the keyed hash that names a patient's cache keys.

Keys (``XHUMA_CACHE_KEYS``) are ``kid:base64key,kid2:base64key``: each key is 32 random bytes in base64
(standard or URL-safe, padding optional), each key id 1-32 characters of ``[A-Za-z0-9._-]``. The FIRST key
encrypts; every listed key decrypts. Rotation without downtime: prepend a new key and roll the replicas; once
the TTLs of data written under the old key have passed (or sooner — unreadable data is a miss and is
refetched), remove the old key.

Every value is sealed with AES-256-GCM in a versioned envelope::

    version (1 byte, 0x01) | kid length (1 byte) | kid (ASCII) | nonce (12 bytes) | ciphertext + tag (16 bytes)

The additional authenticated data binds the envelope header, the deployment's key namespace and the cache key,
so a value copied to another key (or another deployment sharing the Redis) fails authentication. A value that
does not decrypt (tampered, truncated, unknown key id) is logged and treated as a miss, never served.

The keyed hash in ``patient:{hash}:...`` is HMAC-SHA256 of the NHS number under a secret that must NOT change
when an encryption key is added, or rotation would orphan every patient entry. Its secret is
``XHUMA_CACHE_HASH_KEY`` when set (recommended in production: it never needs rotating with the encryption
keys), otherwise the LAST key of ``XHUMA_CACHE_KEYS`` — new keys are prepended, so the last one is the oldest
and stays put while keys are added. Removing that last key changes the hash (see docs/data-protection.md).

Subkeys are derived once, with HKDF-SHA256 and distinct ``info`` labels, so the same key material is never used
both to encrypt and to hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xhuma.config import ConfigurationError
from xhuma.nhs.nhs_number import normalise as normalise_nhs_number
from xhuma.ports import Cache

if TYPE_CHECKING:
    from xhuma.config import Settings

log = structlog.get_logger(__name__)

ENVELOPE_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
MIN_HASH_KEY_BYTES = 32
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")

_ENCRYPTION_INFO = b"xhuma cache aes-256-gcm v1"
_PATIENT_HASH_INFO = b"xhuma cache patient-key hmac v1"
_AAD_LABEL = b"xhuma-cache"


class CacheKeyError(ValueError):
    """A malformed XHUMA_CACHE_KEYS / XHUMA_CACHE_HASH_KEY. The message is one line and never holds key material."""


def _hkdf(material: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(material)


def _decode_key(text: str) -> bytes:
    text = text.strip()
    padded = text + "=" * (-len(text) % 4)
    altchars = b"-_" if ("-" in text or "_" in text) else None
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        raise CacheKeyError("is not base64") from None


def parse_cache_keys(text: str) -> list[tuple[str, bytes]]:
    """``kid:base64key,...`` -> [(kid, 32 bytes)], first = encrypting key. Raises CacheKeyError (one line)."""
    entries = [entry.strip() for entry in text.replace("\n", ",").split(",") if entry.strip()]
    if not entries:
        raise CacheKeyError("no key given; expected 'kid:base64key[,kid2:base64key...]'")
    parsed: list[tuple[str, bytes]] = []
    for position, entry in enumerate(entries, start=1):
        kid, separator, encoded = entry.partition(":")
        kid = kid.strip()
        if not separator or not encoded.strip():
            raise CacheKeyError(f"entry {position}: expected 'kid:base64key'")
        if not KEY_ID_PATTERN.match(kid):
            raise CacheKeyError(f"entry {position}: key id must be 1-32 characters of A-Z a-z 0-9 . _ -")
        try:
            key = _decode_key(encoded)
        except CacheKeyError as error:
            raise CacheKeyError(f"entry {position} ({kid}): key {error}") from None
        if len(key) != KEY_BYTES:
            raise CacheKeyError(f"entry {position} ({kid}): key must be {KEY_BYTES} bytes (got {len(key)})")
        if any(kid == seen for seen, _ in parsed):
            raise CacheKeyError(f"entry {position}: duplicate key id {kid}")
        parsed.append((kid, key))
    return parsed


def parse_hash_key(text: str) -> bytes:
    """``XHUMA_CACHE_HASH_KEY``: base64 of at least 32 random bytes."""
    try:
        key = _decode_key(text)
    except CacheKeyError as error:
        raise CacheKeyError(f"key {error}") from None
    if len(key) < MIN_HASH_KEY_BYTES:
        raise CacheKeyError(f"key must be at least {MIN_HASH_KEY_BYTES} bytes (got {len(key)})")
    return key


def new_key_text(kid: str) -> str:
    """A fresh ``kid:base64key`` entry for XHUMA_CACHE_KEYS."""
    if not KEY_ID_PATTERN.match(kid):
        raise CacheKeyError("key id must be 1-32 characters of A-Z a-z 0-9 . _ -")
    return f"{kid}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


class CacheKeyring:
    """The cache encryption keys (first encrypts, all decrypt) and the patient-hash secret, derived once."""

    def __init__(
        self, keys: Sequence[tuple[str, bytes]], *, hash_key: bytes | None = None, ephemeral: bool = False
    ) -> None:
        if not keys:
            raise CacheKeyError("no key given")
        self._aead: dict[str, AESGCM] = {kid: AESGCM(_hkdf(key, _ENCRYPTION_INFO)) for kid, key in keys}
        self.encrypting_kid = keys[0][0]
        self.key_ids = tuple(kid for kid, _ in keys)
        # See the module docstring: a dedicated secret, else the last (oldest) key, never the encrypting one.
        self.hash_source = "XHUMA_CACHE_HASH_KEY" if hash_key is not None else f"key {keys[-1][0]}"
        self._hash_key = _hkdf(hash_key if hash_key is not None else keys[-1][1], _PATIENT_HASH_INFO)
        self.ephemeral = ephemeral

    @classmethod
    def from_text(cls, keys: str, *, hash_key: str | None = None) -> CacheKeyring:
        return cls(parse_cache_keys(keys), hash_key=parse_hash_key(hash_key) if hash_key else None)

    @classmethod
    def generate(cls, *, hash_key: bytes | None = None) -> CacheKeyring:
        """An ephemeral keyring (simulator profile without XHUMA_CACHE_KEYS): data dies with the process."""
        return cls([("ephemeral", os.urandom(KEY_BYTES))], hash_key=hash_key, ephemeral=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> CacheKeyring:
        """The keyring of a deployment. Strict profiles refuse to start without XHUMA_CACHE_KEYS.

        Raises ``ConfigurationError`` (one line) for a missing or malformed key.
        """
        hash_key: bytes | None = None
        if settings.cache_hash_key is not None:
            try:
                hash_key = parse_hash_key(settings.cache_hash_key.get_secret_value())
            except CacheKeyError as error:
                raise ConfigurationError(f"XHUMA_CACHE_HASH_KEY: {error}") from None
        if settings.cache_keys is not None:
            try:
                return cls(parse_cache_keys(settings.cache_keys.get_secret_value()), hash_key=hash_key)
            except CacheKeyError as error:
                raise ConfigurationError(f"XHUMA_CACHE_KEYS: {error}") from None
        if settings.profile.strict:
            raise ConfigurationError(
                f"XHUMA_CACHE_KEYS: required in the {settings.profile.value} profile (cache encryption at rest);"
                " create one with `xhuma cache new-key`"
            )
        return cls.generate(hash_key=hash_key)

    def patient_hash(self, nhs_number: str) -> str:
        """Keyed hash naming a patient's cache keys: 128 bits of HMAC-SHA256, hex."""
        digest = hmac.new(self._hash_key, normalise_nhs_number(nhs_number).encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def aead(self, kid: str) -> AESGCM | None:
        return self._aead.get(kid)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a cached value was not served (for logs and tests; holds no data)."""

    reason: str  # malformed | unknown-key | authentication-failed
    kid: str | None = None


class EncryptedCache:
    """A Cache whose values are sealed with AES-256-GCM; a value that does not open is a logged miss."""

    def __init__(self, inner: Cache, keyring: CacheKeyring, *, context: str = "") -> None:
        self.inner = inner
        self.keyring = keyring
        self._context = context.encode()
        self.rejected = 0

    def _aad(self, header: bytes, key: str) -> bytes:
        return b"\x00".join((_AAD_LABEL, header, self._context, key.encode()))

    def seal(self, key: str, value: bytes) -> bytes:
        kid = self.keyring.encrypting_kid.encode()
        header = bytes((ENVELOPE_VERSION, len(kid))) + kid
        nonce = os.urandom(NONCE_BYTES)
        aead = self.keyring.aead(self.keyring.encrypting_kid)
        assert aead is not None
        return header + nonce + aead.encrypt(nonce, value, self._aad(header, key))

    def open(self, key: str, envelope: bytes) -> bytes | Rejection:
        if len(envelope) < 2 or envelope[0] != ENVELOPE_VERSION:
            return Rejection("malformed")
        kid_end = 2 + envelope[1]
        if len(envelope) < kid_end + NONCE_BYTES + 16:
            return Rejection("malformed")
        try:
            kid = envelope[2:kid_end].decode("ascii")
        except UnicodeDecodeError:
            return Rejection("malformed")
        aead = self.keyring.aead(kid)
        if aead is None:
            return Rejection("unknown-key", kid)
        nonce = envelope[kid_end : kid_end + NONCE_BYTES]
        sealed = memoryview(envelope)[kid_end + NONCE_BYTES :]  # not copied: a cached document is large
        try:
            return aead.decrypt(nonce, sealed, self._aad(envelope[:kid_end], key))
        except InvalidTag:
            return Rejection("authentication-failed", kid)

    async def get(self, key: str) -> bytes | None:
        envelope = await self.inner.get(key)
        if envelope is None:
            return None
        opened = self.open(key, envelope)
        if isinstance(opened, Rejection):
            self.rejected += 1
            # The key's first segment only (patient / document / sds / token): the hash is not logged.
            log.warning("cache_value_rejected", reason=opened.reason, kid=opened.kid, entry=key.split(":", 1)[0])
            return None
        return opened

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self.inner.set(key, self.seal(key, value), ttl_seconds)

    async def add(self, key: str, value: bytes, ttl_seconds: int) -> bool:
        return await self.inner.add(key, self.seal(key, value), ttl_seconds)

    async def delete(self, *keys: str) -> int:
        return await self.inner.delete(*keys)

    async def keys(self, prefix: str) -> list[str]:
        return await self.inner.keys(prefix)

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def close(self) -> None:
        await self.inner.close()


__all__ = [
    "CacheKeyError",
    "CacheKeyring",
    "EncryptedCache",
    "Rejection",
    "new_key_text",
    "parse_cache_keys",
    "parse_hash_key",
]

"""Issue 7: whoever can read the Redis must not be able to read patient data (AES-256-GCM, keys from settings)."""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator

import pytest
import structlog
from tests.dataprotection.helpers import NHS_NUMBER, key_entry, raw_items, raw_redis

from xhuma.config import ConfigurationError, load_settings
from xhuma.store.cache import MemoryCache, RedisCache, ResilientCache
from xhuma.store.crypto import CacheKeyError, CacheKeyring, EncryptedCache, parse_cache_keys
from xhuma.store.keys import CacheKeys

DOCUMENT = b"<ClinicalDocument><name>Jane SMITH</name>" + NHS_NUMBER.encode() + b"</ClinicalDocument>"


@pytest.fixture
def keyring() -> CacheKeyring:
    return CacheKeyring.from_text(key_entry("k1"))


@pytest.fixture
async def redis_cache(redis_url: str, redis_namespace: str) -> AsyncIterator[RedisCache]:
    cache = RedisCache(redis_url, namespace=redis_namespace, timeout_seconds=2)
    yield cache
    await cache.close()


async def test_value_in_redis_is_ciphertext_and_reads_back_as_plaintext(
    redis_cache: RedisCache, keyring: CacheKeyring, redis_url: str, redis_namespace: str
) -> None:
    cache = EncryptedCache(redis_cache, keyring, context=redis_namespace)
    await cache.set("document:1.2.3", DOCUMENT, 60)

    stored = await raw_items(redis_url, redis_namespace)
    assert list(stored) == [f"{redis_namespace}:document:1.2.3".encode()]
    raw = stored[f"{redis_namespace}:document:1.2.3".encode()]
    assert NHS_NUMBER.encode() not in raw and b"SMITH" not in raw and b"ClinicalDocument" not in raw
    assert raw[0] == 1 and raw[2 : 2 + raw[1]] == b"k1"  # envelope: version, key id
    assert len(raw) == 2 + 2 + 12 + len(DOCUMENT) + 16  # header, nonce, ciphertext, GCM tag
    assert await cache.get("document:1.2.3") == DOCUMENT


async def test_same_value_twice_gives_different_ciphertexts(redis_cache: RedisCache, keyring: CacheKeyring,
                                                             redis_url: str, redis_namespace: str) -> None:
    cache = EncryptedCache(redis_cache, keyring)
    await cache.set("a", DOCUMENT, 60)
    await cache.set("b", DOCUMENT, 60)
    stored = await raw_items(redis_url, redis_namespace)
    assert stored[f"{redis_namespace}:a".encode()] != stored[f"{redis_namespace}:b".encode()]


@pytest.mark.parametrize("position", [0, 1, 3, 10, -1, -20])
async def test_tampered_value_is_never_served(
    redis_cache: RedisCache, keyring: CacheKeyring, redis_url: str, redis_namespace: str, position: int
) -> None:
    """Any flipped byte — version, key id, nonce, ciphertext or tag — makes the value a logged miss."""
    cache = ResilientCache(EncryptedCache(redis_cache, keyring), name="redis")
    await cache.set("document:1.2.3", DOCUMENT, 60)
    name = f"{redis_namespace}:document:1.2.3"
    async with raw_redis(redis_url) as client:
        raw = bytearray(await client.get(name))
        raw[position] ^= 0x01
        await client.set(name, bytes(raw), ex=60)

    with structlog.testing.capture_logs() as logs:
        assert await cache.get("document:1.2.3") is None
    rejected = [entry for entry in logs if entry["event"] == "cache_value_rejected"]
    assert len(rejected) == 1 and rejected[0]["entry"] == "document"
    assert NHS_NUMBER not in repr(logs)


async def test_truncated_and_foreign_values_are_misses(redis_cache: RedisCache, keyring: CacheKeyring,
                                                       redis_url: str, redis_namespace: str) -> None:
    cache = EncryptedCache(redis_cache, keyring)
    async with raw_redis(redis_url) as client:
        await client.set(f"{redis_namespace}:plain", DOCUMENT, ex=60)  # written by something that does not encrypt
        await client.set(f"{redis_namespace}:short", b"\x01\x02k1", ex=60)
        await client.set(f"{redis_namespace}:empty", b"", ex=60)
    for key in ("plain", "short", "empty"):
        assert await cache.get(key) is None
    assert cache.rejected == 3


async def test_value_moved_to_another_key_is_not_served(redis_cache: RedisCache, keyring: CacheKeyring,
                                                        redis_url: str, redis_namespace: str) -> None:
    """The cache key is authenticated data: patient A's bundle copied under patient B's key does not open."""
    keys = CacheKeys(keyring.patient_hash)
    cache = EncryptedCache(redis_cache, keyring, context=redis_namespace)
    await cache.set(keys.bundle(NHS_NUMBER), b'{"resourceType": "Bundle"}', 60)
    async with raw_redis(redis_url) as client:
        sealed = await client.get(f"{redis_namespace}:{keys.bundle(NHS_NUMBER)}")
        await client.set(f"{redis_namespace}:{keys.bundle('9434765870')}", sealed, ex=60)
    assert await cache.get(keys.bundle("9434765870")) is None
    assert await cache.get(keys.bundle(NHS_NUMBER)) == b'{"resourceType": "Bundle"}'


async def test_value_from_another_deployment_namespace_is_not_served(keyring: CacheKeyring) -> None:
    """Two deployments sharing keys and a Redis: the namespace is authenticated too."""
    memory = MemoryCache()
    await EncryptedCache(memory, keyring, context="xhuma-int").set("document:1", DOCUMENT, 60)
    assert await EncryptedCache(memory, keyring, context="xhuma-dep").get("document:1") is None
    assert await EncryptedCache(memory, keyring, context="xhuma-int").get("document:1") == DOCUMENT


async def test_memory_cache_values_are_encrypted_too(keyring: CacheKeyring) -> None:
    memory = MemoryCache()
    await EncryptedCache(memory, keyring).set("document:1", DOCUMENT, 60)
    _, held = memory._items["document:1"]
    assert NHS_NUMBER.encode() not in held and b"SMITH" not in held


# --- keys -------------------------------------------------------------------------------------------------


def test_patient_cache_keys_hold_a_keyed_hash_not_the_nhs_number(keyring: CacheKeyring) -> None:
    keys = CacheKeys(keyring.patient_hash)
    for key in (keys.pds_patient(NHS_NUMBER), keys.bundle("943 476 5919"), keys.patient_documents(NHS_NUMBER)):
        assert NHS_NUMBER not in key.replace(" ", "")
    assert keys.bundle("943 476 5919") == keys.bundle(NHS_NUMBER)  # spaces do not make another patient
    other = CacheKeyring.from_text(key_entry("k1"))
    assert other.patient_hash(NHS_NUMBER) != keyring.patient_hash(NHS_NUMBER)  # keyed: no precomputed table


def test_adding_an_encryption_key_does_not_change_the_patient_hash() -> None:
    old = key_entry("2026-01")
    before = CacheKeyring.from_text(old)
    after = CacheKeyring.from_text(f"{key_entry('2026-06')},{old}")
    assert after.encrypting_kid == "2026-06"
    assert after.patient_hash(NHS_NUMBER) == before.patient_hash(NHS_NUMBER)


def test_dedicated_hash_key_keeps_the_patient_hash_through_a_complete_key_change() -> None:
    hash_key = base64.b64encode(os.urandom(32)).decode()
    first = CacheKeyring.from_text(key_entry("a"), hash_key=hash_key)
    replaced = CacheKeyring.from_text(key_entry("b"), hash_key=hash_key)
    assert first.patient_hash(NHS_NUMBER) == replaced.patient_hash(NHS_NUMBER)
    assert first.hash_source == "XHUMA_CACHE_HASH_KEY"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "no key given"),
        ("k1", "entry 1: expected 'kid:base64key'"),
        ("k1:", "entry 1: expected 'kid:base64key'"),
        ("bad id!:" + base64.b64encode(b"x" * 32).decode(), "entry 1: key id must be"),
        ("k1:not*base64", "entry 1 (k1): key is not base64"),
        ("k1:" + base64.b64encode(b"x" * 16).decode(), "entry 1 (k1): key must be 32 bytes (got 16)"),
        (key_entry("k1") + "," + key_entry("k1"), "entry 2: duplicate key id k1"),
    ],
)
def test_malformed_cache_keys_are_refused_with_one_line_naming_the_problem(text: str, expected: str) -> None:
    with pytest.raises(CacheKeyError) as caught:
        parse_cache_keys(text)
    assert str(caught.value).startswith(expected)
    assert "\n" not in str(caught.value)


def test_url_safe_unpadded_keys_and_several_entries_are_accepted() -> None:
    raw = os.urandom(32)
    url_safe = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    parsed = parse_cache_keys(f" new:{url_safe} ,old:{base64.b64encode(os.urandom(32)).decode()}")
    assert parsed[0] == ("new", raw) and [kid for kid, _ in parsed] == ["new", "old"]


def test_bad_cache_keys_setting_is_a_one_line_configuration_error_without_key_material(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = base64.b64encode(b"s" * 16).decode()
    monkeypatch.setenv("XHUMA_CACHE_KEYS", f"k1:{secret}")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert str(caught.value).startswith("XHUMA_CACHE_KEYS:") and "32 bytes" in str(caught.value)
    assert secret not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("profile", ["int", "dep", "live"])
def test_strict_profiles_refuse_to_start_without_cache_keys(profile: str, make_settings: object) -> None:
    """create_app and `xhuma serve` build the keyring with from_settings before anything else is started."""
    settings = make_settings(profile=profile)  # type: ignore[operator]
    with pytest.raises(ConfigurationError) as caught:
        CacheKeyring.from_settings(settings)
    assert str(caught.value).startswith(f"XHUMA_CACHE_KEYS: required in the {profile} profile")
    assert "\n" not in str(caught.value)


def test_simulator_profile_generates_an_ephemeral_key(make_settings: object) -> None:
    settings = make_settings()  # type: ignore[operator]
    first, second = CacheKeyring.from_settings(settings), CacheKeyring.from_settings(settings)
    assert first.ephemeral and second.ephemeral
    assert first.patient_hash(NHS_NUMBER) != second.patient_hash(NHS_NUMBER)  # random, never a fixed default


def test_configured_keys_are_used_in_the_simulator_profile_too(make_settings: object) -> None:
    entry = key_entry("k1")
    settings = make_settings(cache_keys=entry)  # type: ignore[operator]
    keyring = CacheKeyring.from_settings(settings)
    assert not keyring.ephemeral
    assert keyring.patient_hash(NHS_NUMBER) == CacheKeyring.from_text(entry).patient_hash(NHS_NUMBER)

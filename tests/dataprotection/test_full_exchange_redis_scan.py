"""Issue 7, done-when: a full ITI-55 -> ITI-38 -> ITI-39 exchange against real Redis (the application as
built by create_app, the NHS simulator over loopback HTTP), then every key and value of that Redis database read
directly: no NHS number, name, birth date, address or document text in clear. Then `xhuma cache purge --patient`
through the CLI leaves nothing of the patient.

Uses a dedicated Redis database (14) that only this module touches, so that "every key" really is every key.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from lxml import etree
from tests.dataprotection.helpers import key_entry
from tests.support.exchange import FAMILY, IDENTIFYING, NHS_NUMBER, app_client, find_document, full_exchange, retrieve
from tests.support.soap import retrieved_document, soap_parts
from typer.testing import CliRunner

from xhuma.app import create_app
from xhuma.cli import app as cli
from xhuma.config import Settings
from xhuma.store.crypto import CacheKeyring
from xhuma.store.keys import CacheKeys

SCAN_DB_URL = "redis://127.0.0.1:6379/14"
NAMESPACE = "xhuma-dp-e2e"
KEYS = key_entry("k1")

# The simulator's demo patient, and the address it has there.
IDENTIFYING_WITH_ADDRESS = [*IDENTIFYING, "BOWESFIELD", "TS18 3BL"]


@pytest.fixture
def scan_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(SCAN_DB_URL)
    client.flushdb()  # database 14 belongs to this test module alone
    yield client
    client.flushdb()
    client.close()


def everything(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key of the database and its value, whatever its type."""
    found: dict[bytes, bytes] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            found[key] = client.get(key) or b""
        elif kind == b"hash":
            found[key] = b"\x00".join(k + b"=" + v for k, v in client.hgetall(key).items())
        elif kind in (b"list",):
            found[key] = b"\x00".join(client.lrange(key, 0, -1))
        elif kind in (b"set",):
            found[key] = b"\x00".join(client.smembers(key))
        elif kind == b"zset":
            found[key] = b"\x00".join(client.zrange(key, 0, -1))
        else:
            found[key] = client.dump(key) or b""
    return found


def document_texts(ccd: bytes) -> list[str]:
    """Distinctive text of the document: every text node of 6+ characters (narrative, names, dates, codes)."""
    root = etree.fromstring(ccd)
    texts = {" ".join(text.split()) for text in root.itertext()}
    return sorted(text for text in texts if len(text) >= 6)


def leaks(items: dict[bytes, bytes], needles: list[str]) -> list[str]:
    found = []
    for key, value in items.items():
        for needle in needles:
            encoded = needle.encode()
            if encoded.lower() in key.lower() or encoded.lower() in value.lower():
                found.append(f"{needle!r} in {key.decode(errors='replace')}")
    return found


async def exchange(settings: Settings) -> tuple[bytes, str]:
    """ITI-55, ITI-38, ITI-39 through the application; returns the retrieved CCD and its uniqueId."""
    async with app_client(create_app(settings)) as client:
        done = await full_exchange(client)
    return done.ccd, done.unique_id


def test_full_exchange_leaves_no_patient_data_in_clear_in_redis_and_purge_leaves_nothing_of_the_patient(
    scan_db: redis.Redis, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(redis_url=SCAN_DB_URL, redis_namespace=NAMESPACE, cache_keys=KEYS)
    ccd, unique_id = asyncio.run(exchange(settings))

    # The exchange worked and the document really is about this patient.
    texts = document_texts(ccd)
    assert NHS_NUMBER in ccd.decode() and FAMILY.lower() in ccd.decode().lower()
    assert len(texts) > 20

    # Every key and value of the database, read directly.
    items = everything(scan_db)
    names = [key.decode() for key in items]
    patient_prefix = CacheKeys(CacheKeyring.from_text(KEYS).patient_hash).patient_prefix(NHS_NUMBER)
    assert f"{NAMESPACE}:{CacheKeys.document(unique_id)}" in names  # the document is cached (sealed)
    assert any(name.startswith(f"{NAMESPACE}:{patient_prefix}") for name in names)
    assert all(name.startswith(f"{NAMESPACE}:") for name in names)
    assert leaks(items, IDENTIFYING_WITH_ADDRESS) == []
    # Document text: skip what is not specific to the patient and also legitimately in a key (the uniqueId).
    assert leaks(items, [text for text in texts if text not in unique_id]) == []
    # No NHS-number-shaped token in a key name: ten digits standing alone, not a stretch of a hex hash or UUID.
    nhs_shaped = re.compile(r"(?<![0-9a-fA-F])\d{10}(?![0-9a-fA-F])")
    assert not [name for name in names if nhs_shaped.search(name.replace(unique_id, ""))]
    assert not [name for name in names if NHS_NUMBER in name]
    for value in items.values():  # every value is a sealed envelope under the configured key
        assert value[0] == 1 and value[2 : 2 + value[1]] == b"k1"

    # Purge the patient through the real CLI, then read everything again.
    result = CliRunner().invoke(cli, ["cache", "purge", "--patient", NHS_NUMBER], env={
        "XHUMA_REDIS_URL": SCAN_DB_URL, "XHUMA_REDIS_NAMESPACE": NAMESPACE, "XHUMA_CACHE_KEYS": KEYS,
        "XHUMA_WORKING_DIR": str(tmp_path)})
    assert result.exit_code == 0, result.output
    assert NHS_NUMBER not in result.output
    purged = r"purged [1-9]\d* patient entries, 1 documents and 1 document pointers"
    assert re.search(purged, result.output), result.output

    remaining = everything(scan_db)
    remaining_names = [key.decode() for key in remaining]
    assert not [name for name in remaining_names if name.startswith(f"{NAMESPACE}:patient:")
                or name.startswith(f"{NAMESPACE}:document:") or name.startswith(f"{NAMESPACE}:entry:")]
    keyring = CacheKeyring.from_text(KEYS)
    from xhuma.store.crypto import EncryptedCache

    opener = EncryptedCache(None, keyring, context=NAMESPACE)  # type: ignore[arg-type]
    for key, value in remaining.items():  # what is left (SDS route, token) does not mention the patient
        opened = opener.open(key.decode().removeprefix(f"{NAMESPACE}:"), value)
        assert isinstance(opened, bytes), key
        assert not [needle for needle in IDENTIFYING_WITH_ADDRESS if needle.lower().encode() in opened.lower()], key


async def query_and_retrieve(settings: Settings, *, tamper: bool = False) -> tuple[str, httpx.Response]:
    """ITI-38 then ITI-39 through a fresh application; optionally flip one byte of the cached document between
    the two. Returns the uniqueId and the ITI-39 response."""
    async with app_client(create_app(settings)) as client:
        document = await find_document(client)
        if tamper:
            raw = redis.Redis.from_url(SCAN_DB_URL)
            name = f"{NAMESPACE}:{CacheKeys.document(document.unique_id)}"
            value = bytearray(raw.get(name) or b"")
            value[-40] ^= 0x20
            raw.set(name, bytes(value), keepttl=True)
            raw.close()
        return document.unique_id, await retrieve(client, document)


def test_tampered_cached_document_is_never_served_and_a_removed_key_means_refetch_not_failure(
    scan_db: redis.Redis, make_settings: Callable[..., Settings]
) -> None:
    old, new = key_entry("old"), key_entry("new")
    common: dict[str, Any] = {"redis_url": SCAN_DB_URL, "redis_namespace": NAMESPACE}

    # Tampered between ITI-38 and ITI-39: the document is not served (XDS error), nothing of it in the answer.
    _, response = asyncio.run(query_and_retrieve(make_settings(cache_keys=old, **common), tamper=True))
    env, attachments = soap_parts(response)
    assert env.find(".//{urn:ihe:iti:xds-b:2007}Document") is None and not attachments
    assert b"RegistryError" in response.content and b"ClinicalDocument" not in response.content

    # The old key removed: ITI-38 fetches and converts again, and ITI-39 serves the new document.
    _, response = asyncio.run(query_and_retrieve(make_settings(cache_keys=new, **common)))
    assert b"ClinicalDocument" in retrieved_document(response)
    assert {value[2 : 2 + value[1]] for value in everything(scan_db).values()} >= {b"new"}

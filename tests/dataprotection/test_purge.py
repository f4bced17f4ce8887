"""Issue 7: `xhuma cache purge --patient N` leaves nothing of that patient in Redis (real Redis, the real CLI)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from tests.dataprotection.helpers import NHS_NUMBER, OTHER_NHS_NUMBER, key_entry, raw_items, raw_redis
from typer.testing import CliRunner

from xhuma.cli import app
from xhuma.store.cache import RedisCache
from xhuma.store.crypto import CacheKeyring, EncryptedCache
from xhuma.store.keys import CacheKeys
from xhuma.store.purge import document_ids_from_index

KEYS = key_entry("k1")
POINTERS = {  # entryUUID -> uniqueId (ITI-38 GetDocuments by entryUUID)
    "urn:uuid:00000000-0000-5000-8000-000000000001": "2.16.840.1.113883.3.9999.1.2.1",
    "urn:uuid:00000000-0000-5000-8000-000000000003": "2.16.840.1.113883.3.9999.1.2.3",
    "urn:uuid:00000000-0000-5000-8000-000000000009": "2.16.840.1.113883.3.9999.1.2.9",
}
runner = CliRunner()


@pytest.fixture(autouse=True)
def _audit_file_in_a_temporary_directory(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The purge writes its audit event to the embedded SQLite audit file of the working directory."""
    monkeypatch.chdir(tmp_path)


def cli_env(redis_url: str, namespace: str, **extra: str) -> dict[str, str]:
    return {"XHUMA_REDIS_URL": redis_url, "XHUMA_REDIS_NAMESPACE": namespace, "XHUMA_CACHE_KEYS": KEYS, **extra}


def populate(redis_url: str, namespace: str) -> None:
    """Two patients' PDS result, bundle, documents index and documents; an SDS route and a token."""

    async def run() -> None:
        keyring = CacheKeyring.from_text(KEYS)
        keys = CacheKeys(keyring.patient_hash)
        cache = EncryptedCache(RedisCache(redis_url, namespace=namespace), keyring, context=namespace)
        for number, family, documents in (
            (NHS_NUMBER, "SMITH", ["2.16.840.1.113883.3.9999.1.2.1", "2.16.840.1.113883.3.9999.1.2.2"]),
            (OTHER_NHS_NUMBER, "JONES", ["2.16.840.1.113883.3.9999.1.2.9"]),
        ):
            await cache.set(keys.pds_patient(number), json.dumps({"nhs": number, "family": family}).encode(), 600)
            await cache.set(keys.bundle(number), json.dumps({"entry": [{"family": family}]}).encode(), 600)
            await cache.set(keys.patient_documents(number), json.dumps({"documents": documents}).encode(), 600)
            await cache.set(CacheKeys.document(documents[0]), f"<ClinicalDocument>{number} {family}".encode(), 600)
        # Listed in the index only (no NHS number inside), and swept only (not in the index, spaced number).
        await cache.set(CacheKeys.document("2.16.840.1.113883.3.9999.1.2.2"), b'{"title": "GP summary"}', 600)
        await cache.set(CacheKeys.document("2.16.840.1.113883.3.9999.1.2.3"), b"<id extension='943 476 5919'/>", 600)
        for entry_uuid, unique_id in POINTERS.items():
            await cache.set(CacheKeys.document_entry(entry_uuid), unique_id.encode(), 600)
        await cache.set(CacheKeys.sds_route("A12345"), b'{"asid": "918999198738"}', 600)
        await cache.set(CacheKeys.oauth_token("pds"), b"token", 600)
        await cache.close()

    asyncio.run(run())


def decrypted_items(redis_url: str, namespace: str) -> dict[str, bytes]:
    async def run() -> dict[str, bytes]:
        keyring = CacheKeyring.from_text(KEYS)
        cache = EncryptedCache(RedisCache(redis_url, namespace=namespace), keyring, context=namespace)
        try:
            return {key: await cache.get(key) or b"" for key in await cache.keys("")}
        finally:
            await cache.close()

    return asyncio.run(run())


def test_purge_patient_leaves_nothing_of_that_patient_and_keeps_the_others(
    redis_url: str, redis_namespace: str
) -> None:
    populate(redis_url, redis_namespace)
    patient_prefix = CacheKeys(CacheKeyring.from_text(KEYS).patient_hash).patient_prefix(NHS_NUMBER)

    result = runner.invoke(app, ["cache", "purge", "--patient", "943 476 5919"],
                           env=cli_env(redis_url, redis_namespace))

    assert result.exit_code == 0, result.output
    assert "purged 3 patient entries, 3 documents and 2 document pointers" in result.output
    assert NHS_NUMBER not in result.output and "943 476" not in result.output
    remaining = decrypted_items(redis_url, redis_namespace)
    assert not [key for key in remaining if key.startswith(patient_prefix)]
    assert not [key for key, value in remaining.items() if NHS_NUMBER.encode() in value or b"SMITH" in value
                or b"943 476 5919" in value]
    other = CacheKeys(CacheKeyring.from_text(KEYS).patient_hash)
    assert set(remaining) == {
        other.pds_patient(OTHER_NHS_NUMBER), other.bundle(OTHER_NHS_NUMBER), other.patient_documents(OTHER_NHS_NUMBER),
        "document:2.16.840.1.113883.3.9999.1.2.9", "entry:urn:uuid:00000000-0000-5000-8000-000000000009",
        "sds:A12345:gpc-structured", "token:pds",
    }


def test_purge_reads_the_nhs_number_from_stdin_so_it_stays_out_of_shell_history(
    redis_url: str, redis_namespace: str
) -> None:
    populate(redis_url, redis_namespace)
    result = runner.invoke(app, ["cache", "purge", "--patient", "-"], input=f"{NHS_NUMBER}\n",
                           env=cli_env(redis_url, redis_namespace))
    assert result.exit_code == 0, result.output
    assert "purged 3 patient entries, 3 documents and 2 document pointers" in result.output
    assert not [value for value in decrypted_items(redis_url, redis_namespace).values() if b"SMITH" in value]


def test_purge_of_a_patient_with_nothing_cached_deletes_nothing(redis_url: str, redis_namespace: str) -> None:
    populate(redis_url, redis_namespace)
    before = asyncio.run(raw_items(redis_url, redis_namespace))
    result = runner.invoke(app, ["cache", "purge", "--patient", "9000000009"], env=cli_env(redis_url, redis_namespace))
    assert result.exit_code == 0, result.output
    assert "purged 0 patient entries, 0 documents and 0 document pointers" in result.output
    assert asyncio.run(raw_items(redis_url, redis_namespace)) == before


@pytest.mark.parametrize("number", ["9434765918", "12345", "94347659190", "abcdefghij"])
def test_invalid_nhs_number_is_refused_without_repeating_it(redis_url: str, redis_namespace: str,
                                                            number: str) -> None:
    result = runner.invoke(app, ["cache", "purge", "--patient", number], env=cli_env(redis_url, redis_namespace))
    assert result.exit_code == 2
    assert "not a valid NHS number" in result.output and number not in result.output


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"XHUMA_REDIS_URL": ""}, "XHUMA_REDIS_URL is unset"),
        ({"XHUMA_CACHE_KEYS": ""}, "XHUMA_CACHE_KEYS is unset"),
        ({"XHUMA_CACHE_KEYS": "k1:c2hvcnQ="}, "XHUMA_CACHE_KEYS: Value error, entry 1 (k1): key must be 32 bytes"),
    ],
)
def test_purge_without_a_usable_configuration_exits_3_with_one_line(
    redis_url: str, redis_namespace: str, env: dict[str, str], message: str
) -> None:
    result = runner.invoke(app, ["cache", "purge", "--patient", NHS_NUMBER],
                           env={**cli_env(redis_url, redis_namespace), **env})
    assert result.exit_code == 3
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_purge_that_cannot_reach_redis_fails_instead_of_reporting_zero(redis_namespace: str) -> None:
    result = runner.invoke(app, ["cache", "purge", "--patient", NHS_NUMBER],
                           env=cli_env("redis://127.0.0.1:1/0", redis_namespace))
    assert result.exit_code == 1
    assert "purge failed, run it again" in result.output


@pytest.fixture
def neighbour_namespace(redis_url: str) -> Iterator[str]:
    namespace = f"xhuma-test-{uuid.uuid4().hex[:12]}"
    yield namespace

    async def cleanup() -> None:
        async with raw_redis(redis_url) as client:
            keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
            if keys:
                await client.delete(*keys)

    asyncio.run(cleanup())


def test_purge_all_empties_this_deployments_namespace_only(
    redis_url: str, redis_namespace: str, neighbour_namespace: str
) -> None:
    populate(redis_url, redis_namespace)
    populate(redis_url, neighbour_namespace)
    neighbour_before = asyncio.run(raw_items(redis_url, neighbour_namespace))

    result = runner.invoke(app, ["cache", "purge", "--all", "--yes"], env=cli_env(redis_url, redis_namespace))

    assert result.exit_code == 0, result.output
    assert "purged 15 cache entries" in result.output
    assert asyncio.run(raw_items(redis_url, redis_namespace)) == {}
    assert asyncio.run(raw_items(redis_url, neighbour_namespace)) == neighbour_before


def test_purge_all_asks_before_deleting(redis_url: str, redis_namespace: str) -> None:
    populate(redis_url, redis_namespace)
    result = runner.invoke(app, ["cache", "purge", "--all"], input="n\n", env=cli_env(redis_url, redis_namespace))
    assert result.exit_code == 1
    assert len(asyncio.run(raw_items(redis_url, redis_namespace))) == 15


@pytest.mark.parametrize("args", [[], ["--all", "--patient", NHS_NUMBER]])
def test_purge_needs_exactly_one_of_patient_or_all(args: list[str]) -> None:
    result = runner.invoke(app, ["cache", "purge", *args])
    assert result.exit_code == 2 and "exactly one of --patient NHS_NUMBER or --all" in result.output


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        (["1.2.3", "urn:oid:1.2.4"], {"1.2.3", "urn:oid:1.2.4"}),
        ({"documents": [{"unique_id": "1.2.3", "title": "GP summary 1.0"}], "current": "document:1.2.5"},
         {"1.2.3", "1.2.5"}),
        ({"1.2.3": {"entry_uuid": "urn:uuid:7d5a02b0-67a4-4c09-8b3b-7a1d4c5e0f11"}},
         {"1.2.3", "urn:uuid:7d5a02b0-67a4-4c09-8b3b-7a1d4c5e0f11"}),
    ],
)
def test_documents_index_is_read_whatever_its_json_shape(index: Any, expected: set[str]) -> None:
    assert document_ids_from_index(json.dumps(index).encode()) == expected
    assert document_ids_from_index(b"not json") == set()


def test_purge_is_audited_with_the_patient_as_a_pseudonym_only(redis_url: str, redis_namespace: str,
                                                                tmp_path: Any) -> None:
    """Issue 6/7: an operator removing a patient's data is an audited event (SCAL GEN-05)."""
    import sqlite3

    from xhuma.audit import pseudonymise

    populate(redis_url, redis_namespace)
    result = runner.invoke(app, ["cache", "purge", "--patient", NHS_NUMBER],
                           env=cli_env(redis_url, redis_namespace, XHUMA_AUDIT_HMAC_KEY="h" * 40))
    assert result.exit_code == 0, result.output
    with sqlite3.connect(tmp_path / "xhuma-audit.db") as database:
        rows = database.execute(
            "SELECT \"transaction\", outcome, patient_pseudonym, details FROM audit_event").fetchall()
    assert len(rows) == 1
    transaction, outcome, pseudonym, details = rows[0]
    assert (transaction, outcome) == ("CACHE-PURGE", "success")
    assert pseudonym == pseudonymise(NHS_NUMBER, b"h" * 40)
    assert json.loads(details) == {"scope": "patient", "patient_entries": 3, "documents": 3, "document_pointers": 2}
    everything = " ".join(str(value) for value in rows[0])
    assert NHS_NUMBER not in everything

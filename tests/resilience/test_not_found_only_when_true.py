"""Issue 15, "Not found only when it is true": the one mapping of our own trouble (a cache that could not answer)
to the IHE answers, and every path of ITI-38 and ITI-39 through it, against a real Redis that is killed."""

from __future__ import annotations

import httpx
import pytest
from tests.resilience.conftest import Replica
from tests.support.exchange import DocumentRef, discover, find_document, post, retrieve
from tests.support.redis_server import RedisServer
from tests.support.soap import GET_DOCUMENTS, RIM, RS, iti38_body, retrieved_document, soap_parts

from xhuma import errors
from xhuma.ihe import faults

pytestmark = pytest.mark.redis


@pytest.mark.parametrize(
    ("error", "transaction", "expected"),
    [
        (errors.CacheError("redis get failed: ConnectionError"), "ITI-39", "XDSRepositoryBusy"),
        (errors.CacheError("redis set failed: TimeoutError"), "ITI-38", "XDSRegistryBusy"),
        (errors.CacheError("redis get skipped: bypassed"), "ITI-38", "XDSRegistryBusy"),
        # An NHS service unreachable, timed out or failing, or paused by its breaker: transient too.
        (errors.UpstreamUnavailable("GP Connect 503", service="gpconnect"), "ITI-38", "XDSRegistryBusy"),
        (errors.CircuitOpen("paused", service="gpconnect"), "ITI-38", "XDSRegistryBusy"),
    ],
)
def test_a_cache_or_upstream_that_could_not_answer_is_registry_or_repository_busy(
    error: Exception, transaction: str, expected: str
) -> None:
    info = faults.registry_error(error, transaction=transaction)
    assert info.error_code == expected
    assert not info.is_warning
    assert "redis" not in info.code_context.lower()  # fixed text, never the exception's


def test_a_cache_that_could_not_answer_in_xcpd_is_ae_responder_busy_never_no_match() -> None:
    answer = faults.xcpd_answer(errors.CacheError("redis get failed: TimeoutError"))
    assert not answer.no_match
    assert answer.xcpd_code == faults.XCPD_RESPONDER_BUSY


def registry_error_codes(response: httpx.Response) -> list[str]:
    env, _ = soap_parts(response)
    return [error.get("errorCode") for error in env.iter(f"{{{RS}}}RegistryError")]


def listed_entries(response: httpx.Response) -> int:
    env, _ = soap_parts(response)
    return len(env.findall(f".//{{{RIM}}}ExtrinsicObject"))


async def get_documents(client: httpx.AsyncClient, document: DocumentRef, slot: str, value: str) -> httpx.Response:
    body = iti38_body({slot: [f"('{value}')"]}, query_id=GET_DOCUMENTS, home=document.home)
    return await post(client, "ITI-38", body)


@pytest.mark.parametrize("by", ["uniqueId", "entryUUID"])
async def test_getdocuments_while_redis_is_down_is_busy_on_a_replica_that_holds_nothing_and_answered_where_held(
    replica: Replica, redis_server: RedisServer, by: str
) -> None:
    async with replica("a") as (_, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        document = await find_document(client_a)
        listed = await post(client_a, "ITI-38", iti38_body())
        env, _ = soap_parts(listed)
        entry = env.find(f".//{{{RIM}}}ExtrinsicObject")
        assert entry is not None
        slot, value = (("$XDSDocumentEntryUniqueId", document.unique_id) if by == "uniqueId"
                       else ("$XDSDocumentEntryEntryUUID", entry.get("id")))
        redis_server.kill()
        unknown = await get_documents(client_b, document, slot, value)
        held = await get_documents(client_a, document, slot, value)
    assert registry_error_codes(unknown) == ["XDSRegistryBusy"] and listed_entries(unknown) == 0
    assert registry_error_codes(held) == [] and listed_entries(held) == 1


async def test_finddocuments_while_redis_is_down_refetches_and_the_document_it_lists_is_retrievable(
    replica: Replica, redis_server: RedisServer
) -> None:
    """A replica that cannot read the patient's index does not know there are none: it fetches the record again,
    holds the result in process, and lists only what it holds."""
    async with replica("a") as (_, client_a), replica("b") as (_, client_b):
        await discover(client_a)
        await find_document(client_a)
        await discover(client_b)
        redis_server.kill()
        document = await find_document(client_b)
        response = await retrieve(client_b, document)
    assert registry_error_codes(response) == []
    assert b"ClinicalDocument" in retrieved_document(response)

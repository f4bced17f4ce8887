"""What the EHR received, shown to an operator: the document's rendering and its conversion report behind the
admin token, each look audited as a disclosure; one exchange grouped from the audit trail; reasons in words."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from tests.support.exchange import app_client, full_exchange
from tests.support.redis_server import RedisServer

from xhuma.app import create_app
from xhuma.config import Settings
from xhuma.web.documents import RENDERED_HEADERS, render_document
from xhuma.web.exchanges import reason_sentences

TOKEN = "documents-" + "d" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def admin_events(client: httpx.AsyncClient, unique_id: str) -> list[dict[str, Any]]:
    page = (await client.get("/api/audit", params={"document_unique_id": unique_id, "transaction": "ADMIN"},
                             headers=AUTH)).json()
    return list(page["items"])


async def test_report_and_rendering_of_an_exchanged_document_are_each_audited_as_the_admins_disclosure(
    make_settings: Any,
) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    async with app_client(app) as client:
        exchange = await full_exchange(client)
        report = await client.get(f"/api/documents/{exchange.unique_id}/report", headers=AUTH)
        rendered = await client.get(f"/api/documents/{exchange.unique_id}/rendered", headers=AUTH)
        events = await admin_events(client, exchange.unique_id)
        retrieved = (await client.get("/api/audit", params={"document_unique_id": exchange.unique_id,
                                                            "transaction": "ITI-39"}, headers=AUTH)).json()
    assert report.status_code == 200 and report.headers["cache-control"] == "no-store"
    body = report.json()
    assert body["resources"] and {item["outcome"] for item in body["resources"]} <= {
        "entry", "narrative", "supporting", "not-mapped"}
    assert "counts" in body and "warnings" in body
    assert rendered.status_code == 200 and rendered.headers["content-type"].startswith("text/html")
    assert rendered.headers["content-security-policy"] == RENDERED_HEADERS["Content-Security-Policy"]
    assert "SKELLY" in rendered.text and "<script" not in rendered.text.lower()
    assert "Allergies" in rendered.text
    # One ADMIN event per look, under the document's uniqueId, the patient's pseudonym and the admin's identity.
    looks = sorted(event["reason"] for event in events)
    assert looks == ["document-rendered", "document-report"]
    patient = retrieved["items"][0]["patient_pseudonym"]
    assert patient and all(event["patient_pseudonym"] == patient for event in events)
    assert all(event["user_id"].startswith("token:") and event["outcome"] == "success" for event in events)


async def test_an_unknown_document_is_404_json_and_without_the_token_401_with_no_disclosure_recorded(
    make_settings: Any,
) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    async with app_client(app) as client:
        unknown = await client.get("/api/documents/2.25.1234/rendered", headers=AUTH)
        unknown_report = await client.get("/api/documents/2.25.1234/report", headers=AUTH)
        exchange = await full_exchange(client)
        anonymous = await client.get(f"/api/documents/{exchange.unique_id}/rendered")
        events = await admin_events(client, exchange.unique_id)
    assert unknown.status_code == 404 and unknown.json()["detail"].startswith("no such document")
    assert unknown_report.status_code == 404
    assert anonymous.status_code == 401 and "SKELLY" not in anonymous.text
    assert events == []


def test_rendering_escapes_the_narrative_and_copies_no_script_link_style_or_handler() -> None:
    hostile = b"""<ClinicalDocument xmlns="urn:hl7-org:v3"><title>T &lt;script&gt;alert(1)&lt;/script&gt;</title>
      <component><structuredBody><component><section><title>Notes</title><text>
        <paragraph ID="p1" onclick="alert(2)" style="color:red">one &lt;img src=x onerror=alert(3)&gt;</paragraph>
        <linkHtml href="javascript:alert(4)">a link</linkHtml>
        <content styleCode="Bold" onmouseover="alert(5)">bold</content>
        <table border="9"><tbody><tr><td colspan="2" onclick="x">cell</td><td colspan="2;x">c2</td></tr></tbody></table>
        <list listType="ordered"><item>first</item></list>
      </text></section></component></structuredBody></component></ClinicalDocument>"""
    page = render_document(hostile).decode()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;" in page and "&lt;img src=x onerror=alert(3)&gt;" in page
    for attribute in ("onclick", "onmouseover", "href=\"javascript", "style=", "border=", "ID="):
        assert attribute not in page
    assert '<td colspan="2">cell</td>' in page and "<td>c2</td>" in page
    assert '<span class="bold">bold</span>' in page and "<ol><li>first</li></ol>" in page


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@contextlib.asynccontextmanager
async def replica(tmp_path: Path, redis: RedisServer, name: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    from tests.resilience.conftest import CACHE_KEYS

    workdir = tmp_path / name
    workdir.mkdir(exist_ok=True)
    app = create_app(Settings(working_dir=workdir, redis_url=redis.url, cache_keys=CACHE_KEYS, admin_tokens=[TOKEN]))
    async with app_client(app) as client:
        yield app, client


@pytest.mark.redis
async def test_while_redis_is_down_a_replica_that_holds_nothing_answers_503_never_404_and_the_holder_shows_it(
    tmp_path: Path, redis_server: RedisServer,
) -> None:
    async with replica(tmp_path, redis_server, "a") as (_, client_a), \
            replica(tmp_path, redis_server, "b") as (_, client_b):
        exchange = await full_exchange(client_a)
        redis_server.kill()
        busy = await client_b.get(f"/api/documents/{exchange.unique_id}/report", headers=AUTH)
        busy_rendered = await client_b.get(f"/api/documents/{exchange.unique_id}/rendered", headers=AUTH)
        held = await client_a.get(f"/api/documents/{exchange.unique_id}/report", headers=AUTH)
    assert busy.status_code == 503 and "try again" in busy.json()["detail"]
    assert busy_rendered.status_code == 503
    assert held.status_code == 200 and held.json()["resources"]


async def test_one_exchange_is_grouped_by_request_with_its_outbound_calls_and_reasons_read_in_words(
    make_settings: Any,
) -> None:
    app = create_app(make_settings(admin_tokens=[TOKEN]))
    async with app_client(app) as client:
        await full_exchange(client)
        query = (await client.get("/api/audit", params={"transaction": "ITI-38"}, headers=AUTH)).json()["items"][0]
        grouped = (await client.get(f"/api/exchanges/{query['request_id']}",
                                    params={"around": query["occurred_at"]}, headers=AUTH)).json()
        far = (await client.get(f"/api/exchanges/{query['request_id']}",
                                params={"around": "2001-01-01T00:00:00Z"}, headers=AUTH)).json()
        reasons = (await client.get("/api/reasons", headers=AUTH)).json()
        anonymous = await client.get(f"/api/exchanges/{query['request_id']}")
    [request] = grouped["requests"]
    assert request["request_id"] == query["request_id"]
    transactions = [event["transaction"] for event in request["events"]]
    assert transactions[-1] == "ITI-38" and {"SDS", "GPC"} <= set(transactions)
    assert far["total"] == 0
    assert anonymous.status_code == 401
    assert reasons == reason_sentences()
    assert reasons["UpstreamUnavailable"] == "An NHS service could not be reached, timed out, or is failing."
    assert reasons["XDSRegistryBusy"].startswith("The document query could not be answered now")


async def test_purging_the_patient_removes_the_conversion_report_with_the_document(make_settings: Any) -> None:
    from tests.support.exchange import NHS_NUMBER

    from xhuma.store.keys import CacheKeys
    from xhuma.store.purge import purge_patient

    app = create_app(make_settings(admin_tokens=[TOKEN]))
    async with app_client(app) as client:
        exchange = await full_exchange(client)
        runtime = app.state.runtime
        assert await runtime.cache.strict.get(CacheKeys.document_report(exchange.unique_id)) is not None
        await purge_patient(runtime.cache.strict, runtime.keys, NHS_NUMBER)
        report = await client.get(f"/api/documents/{exchange.unique_id}/report", headers=AUTH)
        left = await runtime.cache.strict.get(CacheKeys.document_report(exchange.unique_id))
    assert report.status_code == 404 and left is None

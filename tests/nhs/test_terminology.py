"""Terminology client (issue 13) against the simulator's NHS England Terminology Server, over real HTTP."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from xhuma.app import Runtime, create_app
from xhuma.audit import Auditor
from xhuma.ccda.context import DmdFacts, Hierarchy
from xhuma.config import Settings, load_settings
from xhuma.errors import CircuitOpen, UpstreamUnauthorised, UpstreamUnavailable
from xhuma.nhs.simulator.server import RunningSimulator
from xhuma.nhs.simulator.terminology import SIMULATOR_CLIENT_ID, SIMULATOR_CLIENT_SECRET
from xhuma.nhs.terminology import HIERARCHY_ECL, TerminologyClient, bundle_codes, packaged_facts, packaged_subset
from xhuma.nhs.transport import build_upstream
from xhuma.observability import Metrics
from xhuma.store.cache import MemoryCache, RedisCache, ResilientCache

from .conftest import RecordingSink
from .test_end_to_end import CALLER, _environment

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "gpconnect"
RECORD = FIXTURES / "uclh-xhuma" / "9690937286.json"


class Terminology:
    def __init__(self, settings: Settings, simulator: RunningSimulator, cache: Any, *,
                 secret: str = SIMULATOR_CLIENT_SECRET, base_url: str | None = None) -> None:
        assert simulator.urls is not None
        self.sink = RecordingSink()
        self.metrics = Metrics()
        self.upstream = build_upstream("terminology", settings, mutual_tls=False, metrics=self.metrics)
        self.client = TerminologyClient(
            settings, self.upstream, cache, base_url=base_url or simulator.urls.terminology_url,
            token_url=simulator.urls.terminology_token_url, client_id=SIMULATOR_CLIENT_ID, client_secret=secret,
            auditor=Auditor(self.sink, hmac_key=b"test-audit-key"), metrics=self.metrics,
        )


@pytest.fixture
async def make_terminology(
    nhs_settings: Callable[..., Settings], simulator: RunningSimulator
) -> AsyncIterator[Callable[..., Terminology]]:
    made: list[Terminology] = []

    def factory(cache: Any = None, **options: Any) -> Terminology:
        made.append(Terminology(nhs_settings(), simulator, cache or ResilientCache(MemoryCache(), name="memory"),
                                **options))
        return made[-1]

    yield factory
    for terminology in made:
        await terminology.upstream.client.aclose()


def _bundle() -> dict[str, Any]:
    return dict(json.loads(RECORD.read_text()))


async def test_a_bundle_is_classified_in_a_few_batched_calls_and_matches_the_packaged_subset(
    make_terminology: Callable[..., Terminology],
) -> None:
    terminology = make_terminology()
    bundle = _bundle()
    concepts, products = bundle_codes(bundle)
    facts = await terminology.client.facts_for(bundle)
    assert facts.available and facts.version == packaged_subset()["provenance"]["version"]
    # token + 2 release versions + (1 + one per hierarchy) expansions per chunk of 100 codes + 1 dm+d batch
    chunks = -(-len(concepts) // 100)
    assert terminology.client.calls == 1 + 2 + (1 + len(HIERARCHY_ECL)) * chunks + (1 if products else 0)
    assert facts.hierarchy == packaged_facts(bundle).hierarchy
    assert facts.hierarchy["46825001"] is Hierarchy.PROCEDURE  # Electrocardiographic monitoring
    assert facts.hierarchy["82272006"] is Hierarchy.DISORDER  # Common cold (a finding too: disorder wins)
    assert facts.hierarchy["49727002"] is Hierarchy.FINDING  # Cough
    assert facts.dmd == packaged_facts(bundle).dmd


async def test_the_dmd_lookup_gives_route_form_and_unit_of_a_product(
    make_terminology: Callable[..., Terminology],
) -> None:
    bundle = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Medication", "code": {"coding": [
        {"system": "http://snomed.info/sct", "code": "319284000", "display": "Amlodipine 10mg tablets"}]}}}]}
    facts = await make_terminology().client.facts_for(bundle)
    assert facts.dmd["319284000"] == DmdFacts(route=("26643006", "Oral"), form=("385055001", "Tablet"),
                                              unit=("428673006", "tablet"))


@pytest.mark.redis
async def test_facts_are_cached_per_code_across_patients_with_the_release_in_the_key(
    make_terminology: Callable[..., Terminology], redis_url: str, redis_namespace: str
) -> None:
    cache = ResilientCache(RedisCache(redis_url, namespace=redis_namespace), name="redis")
    first = make_terminology(cache)
    await first.client.facts_for(_bundle())
    second = make_terminology(cache)  # another replica, same Redis: only the token and the release versions
    facts = await second.client.facts_for(_bundle())
    assert second.client.calls == 3
    assert facts.hierarchy["46825001"] is Hierarchy.PROCEDURE
    version = packaged_subset()["provenance"]["version"]
    assert await cache.get(f"terminology:{version}:sct:46825001") == b"procedure"
    await cache.close()


async def test_every_call_is_audited_as_a_terminology_transaction(
    make_terminology: Callable[..., Terminology],
) -> None:
    terminology = make_terminology()
    await terminology.client.facts_for(_bundle())
    events = terminology.sink.events
    assert len(events) == terminology.client.calls
    assert {e.transaction for e in events} == {"TERMINOLOGY"} and {e.outcome for e in events} == {"success"}
    assert {e.details["operation"] for e in events if e.details} >= {"token", "version", "expand", "lookup-batch"}


async def test_wrong_client_credentials_are_unauthorised_and_audited_as_denied(
    make_terminology: Callable[..., Terminology],
) -> None:
    terminology = make_terminology(secret="wrong")
    with pytest.raises(UpstreamUnauthorised):
        await terminology.client.facts_for(_bundle())
    assert [e.outcome for e in terminology.sink.events] == ["denied"]


async def test_a_dead_server_opens_its_breaker(make_terminology: Callable[..., Terminology]) -> None:
    terminology = make_terminology(base_url="http://127.0.0.1:1/fhir")
    for _ in range(3):
        with pytest.raises(UpstreamUnavailable):  # CircuitOpen (a subclass) once the breaker opens
            await terminology.client.facts_for(_bundle())
    with pytest.raises(CircuitOpen):
        await terminology.client.facts_for(_bundle())


def test_the_packaged_subset_covers_every_snomed_code_of_the_fixtures() -> None:
    subset = packaged_subset()
    assert "not_from" in subset["provenance"]  # says honestly it is not a SNOMED release
    missing: set[str] = set()
    for path in FIXTURES.rglob("*.json"):
        for item in json.loads(path.read_text()).get("entry") or []:
            missing.update(_codes(item.get("resource")) - subset["snomed"].keys())
    assert not missing


def test_each_classified_code_says_how_it_was_classified() -> None:
    for code, entry in packaged_subset()["snomed"].items():
        assert entry["basis"], code
        assert entry["hierarchy"] in (None, *[h.value for h in Hierarchy]), code


def _codes(value: object) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if value.get("system") == "http://snomed.info/sct" and isinstance(value.get("code"), str):
            found.add(value["code"].strip())
        for item in value.values():
            found |= _codes(item)
    elif isinstance(value, list):
        for item in value:
            found |= _codes(item)
    return found


async def test_the_gateway_resolves_terminology_before_conversion_and_places_procedures_and_past_history(
    tmp_path: Path, client_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xhuma.ihe.endpoints import build_gateway

    data = tmp_path / "records"
    data.mkdir()
    shutil.copy(RECORD, data / "9690937286.json")
    _environment(monkeypatch, tmp_path, client_key_file, data)
    app = create_app(load_settings())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        records = build_gateway(runtime).records
        result = await records.query_documents("9690937286", CALLER)
        xml = result.documents[0].content
        assert b'<templateId root="2.16.840.1.113883.10.20.22.2.20"' in xml  # Past Medical History
        assert b'<procedure classCode="PROC" moodCode="EVN">' in xml


async def test_a_failing_terminology_server_never_fails_the_query_the_fallbacks_apply(
    tmp_path: Path, client_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xhuma.ihe.endpoints import build_gateway

    data = tmp_path / "records"
    data.mkdir()
    shutil.copy(RECORD, data / "9690937286.json")
    _environment(monkeypatch, tmp_path, client_key_file, data)
    monkeypatch.setenv("XHUMA_TERMINOLOGY_URL", "http://127.0.0.1:1/fhir")  # nothing listens there
    app = create_app(load_settings())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        records = build_gateway(runtime).records
        result = await records.query_documents("9690937286", CALLER)
        xml = result.documents[0].content
        assert b"2.16.840.1.113883.10.20.22.2.20" not in xml
        report = await records.document_report(result.documents[0].unique_id)
        assert report is not None
        assert any(w["code"] == "terminology-unavailable" for w in report["warnings"])


def test_a_terminology_call_is_an_atna_query_event() -> None:
    from datetime import UTC, datetime

    from xhuma.atna import dicom_audit_message
    from xhuma.ports import AuditEvent

    event = AuditEvent(transaction="TERMINOLOGY", outcome="success", occurred_at=datetime(2026, 1, 1, tzinfo=UTC))
    message = dicom_audit_message(event, source_id="xhuma")
    assert b'csd-code="110112"' in message and b"NHS England Terminology Server lookup" in message

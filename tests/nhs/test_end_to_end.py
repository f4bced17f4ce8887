"""Dropping any fixture bundle into XHUMA_SIMULATOR_DATA makes that patient available end to end: the app's
lifespan starts the simulator in-process on loopback and the production clients reach it over real HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import GPCONNECT_BUNDLES

from xhuma.app import Runtime, create_app
from xhuma.config import load_settings
from xhuma.nhs.nhs_number import is_valid_nhs_number
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient
from xhuma.nhs.simulator.records import bundle_patient, nhs_number_of
from xhuma.ports import CallerIdentity

from .conftest import API_KEY, FAST, KID

CALLER = CallerIdentity(user_id="u1", user_name="Jane Smith", organization="Example Hospital", verified=True)


def _environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, key_file: Path, data: Path | None) -> None:
    values = {"XHUMA_WORKING_DIR": str(tmp_path), "XHUMA_PDS_PRIVATE_KEY_FILE": str(key_file),
              "XHUMA_PDS_KID": KID, "XHUMA_PDS_API_KEY": API_KEY,
              **{f"XHUMA_{name.upper()}": str(value) for name, value in FAST.items()}}
    # Nothing here tests a timeout: a read may take as long as the largest record (1.15 MB) takes a loaded CI
    # machine to answer (the suite's 0.6 s did not suffice once).
    values["XHUMA_HTTP_READ_TIMEOUT_SECONDS"] = "5"
    if data is not None:
        values["XHUMA_SIMULATOR_DATA"] = str(data)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def _expected_number(path: Path) -> str | None:
    document = json.loads(path.read_text())
    patient = bundle_patient(document) if isinstance(document, dict) else None
    number = nhs_number_of(patient) if patient else None
    return number if number and is_valid_nhs_number(number) else None


@pytest.mark.parametrize("bundle", GPCONNECT_BUNDLES, ids=lambda path: f"{path.parent.name}/{path.stem}")
async def test_dropping_any_fixture_bundle_into_simulator_data_makes_it_available_end_to_end(
    bundle: Path, tmp_path: Path, client_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "my-records"
    data.mkdir()
    shutil.copy(bundle, data / bundle.name)
    _environment(monkeypatch, tmp_path, client_key_file, data)
    app = create_app(load_settings())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        simulator = runtime.nhs.simulator
        number = _expected_number(bundle)
        if number is None:
            # Not a usable record (no Patient, no or invalid NHS number): reported with the reason, never served.
            assert [name for name, _ in simulator.config.data.skipped] == [bundle.name]
            return
        patient = await runtime.pds.get_patient(number)
        assert patient.gp_ods_code
        route = await runtime.sds.gp_connect_route(patient.gp_ods_code)
        record = await runtime.gpconnect.get_structured_record(number, route, CALLER, pds_patient=patient)
        served = bundle_patient(dict(record.bundle))
        assert served is not None and nhs_number_of(served) == number
        assert record.bundle["id"] == record.trace_id


async def test_simulator_profile_serves_the_packaged_sample_set_and_fault_patients_by_default(
    tmp_path: Path, client_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(monkeypatch, tmp_path, client_key_file, None)
    app = create_app(load_settings())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        patient = await runtime.pds.get_patient(DEMO_PATIENT)
        route = await runtime.sds.gp_connect_route(patient.gp_ods_code or "")
        record = await runtime.gpconnect.get_structured_record(DEMO_PATIENT, route, CALLER, pds_patient=patient)
        assert len(record.bundle["entry"]) > 100
        assert (await runtime.pds.get_patient(fault_patient(Fault.DECEASED))).deceased
        urls = runtime.nhs.simulator.urls
        assert urls.base.startswith("http://127.0.0.1:")


async def test_simulator_profile_without_a_configured_key_generates_one_the_simulator_trusts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XHUMA_WORKING_DIR", str(tmp_path))
    app = create_app(load_settings())
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        assert (await runtime.pds.get_patient(DEMO_PATIENT)).nhs_number == DEMO_PATIENT

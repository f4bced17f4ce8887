"""``xhuma demo`` names the real cause of every failure in one line (issue 16): the XCPD error code and text, the
RegistryError code and context, a connection error, a wrong URL path; never "no match" for our own trouble and
never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xhuma.cli import EXIT_FAILED, EXIT_USAGE, app
from xhuma.ihe.demo import DemoFailed, demo_demographics, embedded_xhuma, run_demo
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XHUMA_WORKING_DIR", str(tmp_path))
    monkeypatch.setenv("XHUMA_HTTP_RETRIES", "0")
    return tmp_path


def demo(*args: str) -> tuple[int, list[str]]:
    result = runner.invoke(app, ["demo", *args])
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr.strip().splitlines()


def test_pds_outage_is_reported_as_the_xcpd_error_and_its_text_not_as_no_match(workdir: Path) -> None:
    code, errors = demo("--nhs-number", fault_patient(Fault.PDS_UNAVAILABLE), "--out", str(workdir / "x.xml"))
    assert code == EXIT_FAILED and len(errors) == 1, errors
    assert errors[0].startswith("xhuma: demo stopped: ITI-55 failed (AE/AE): XCPD ")
    assert "acknowledgementDetail" in errors[0] and "not available" in errors[0]
    assert "no match" not in errors[0]


def test_an_unknown_patient_is_no_match(workdir: Path) -> None:
    code, errors = demo("--nhs-number", fault_patient(Fault.NOT_FOUND), "--out", str(workdir / "x.xml"))
    assert code == EXIT_FAILED
    assert errors == ["xhuma: demo stopped: ITI-55: no match for this patient (AA/NF)"]


def test_a_record_not_shared_says_iti38_gave_no_error_rather_than_an_empty_record(workdir: Path) -> None:
    code, errors = demo("--nhs-number", fault_patient(Fault.NO_CONSENT), "--out", str(workdir / "x.xml"))
    assert code == EXIT_FAILED and len(errors) == 1
    assert errors[0].startswith("xhuma: demo stopped: ITI-38 offered no document and gave no error")


def test_a_gp_connect_failure_shows_the_registry_error_code_and_context(workdir: Path) -> None:
    code, errors = demo("--nhs-number", fault_patient(Fault.GPC_INTERNAL_ERROR), "--out", str(workdir / "x.xml"))
    assert code == EXIT_FAILED and len(errors) == 1
    assert errors[0].startswith("xhuma: demo stopped: ITI-38 offered no document: XDS")
    assert ": " in errors[0].split("offered no document: ", 1)[1]  # the codeContext after the code


def test_a_closed_port_is_one_line_naming_the_address_and_the_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connection is refused
        code, errors = demo("--url", f"http://127.0.0.1:{port}")
    assert code == EXIT_FAILED
    assert errors == [f"xhuma: demo could not reach Xhuma at http://127.0.0.1:{port}/SOAP/iti55: ConnectError: "
                      "All connection attempts failed"]


def test_an_address_without_a_scheme_is_one_line() -> None:
    code, errors = demo("--url", "127.0.0.1:8000")
    assert code in (EXIT_FAILED, EXIT_USAGE) and len(errors) == 1
    assert "http://" in errors[0]


async def test_a_wrong_url_path_is_one_line_with_the_status_not_a_traceback(workdir: Path) -> None:
    async with embedded_xhuma({"working_dir": workdir}) as base:
        with pytest.raises(DemoFailed) as failed:
            await run_demo(f"{base}/gateway", DEMO_PATIENT, demo_demographics(DEMO_PATIENT), workdir / "x.xml",
                           echo=lambda _line: None)
    message = str(failed.value)
    assert message == (f"POST {base}/gateway/SOAP/iti55 answered HTTP 404 application/json, not SOAP "
                       "(is --url the gateway's base address?)")

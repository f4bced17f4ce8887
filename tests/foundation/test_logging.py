"""No PHI in logs: the redaction safety net masks NHS-number-shaped values on every line."""

from __future__ import annotations

import logging

import pytest
import structlog

from xhuma.observability import REDACTED, configure_logging, redact


@pytest.mark.parametrize("text", ["9690937286", "969 093 7286", "969-093-7286", "nhs=9690937286;"])
def test_nhs_number_shapes_are_masked(text: str) -> None:
    assert "7286" not in redact(text)
    assert REDACTED in redact(text)


@pytest.mark.parametrize("text", ["2.16.840.1.113883.2.1.4.1", "12345678901", "took 1234 ms", "1.2.9690937286"])
def test_oids_longer_numbers_and_small_numbers_are_kept(text: str) -> None:
    assert redact(text) == text


def test_structlog_and_stdlib_lines_are_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    structlog.get_logger("t").info("lookup", patient="9690937286", count=9690937286, nested={"n": "969 093 7286"})
    logging.getLogger("uvicorn.error").info("GET /x?nhs=%s", "9690937286")
    try:
        raise ValueError("bad 9690937286")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    err = capsys.readouterr().err
    assert "7286" not in err
    assert err.count(REDACTED) >= 5


def test_lines_logged_during_a_request_carry_its_request_and_trace_id(
    capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    import json

    from fastapi.testclient import TestClient

    from xhuma.app import create_app
    from xhuma.config import Settings

    configure_logging("INFO", "json")
    app = create_app(Settings(working_dir=tmp_path))  # type: ignore[arg-type]

    @app.get("/probe")
    async def probe() -> dict[str, str]:
        structlog.get_logger("probe").info("probe_handled")
        return {}

    with TestClient(app) as client:
        client.get("/probe", headers={"X-Request-ID": "req-42"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    (probe_line,) = [line for line in lines if line["event"] == "probe_handled"]
    assert probe_line["request_id"] == "req-42"
    assert probe_line["trace_id"]


def test_a_closed_log_stream_never_prints_a_stack_trace_with_call_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Logging configured while stderr was a stream that has since been closed (a test runner, a daemoniser) must
    neither fail nor print '--- Logging error ---' with frames: they hold call arguments (patient data)."""
    import io
    import sys

    original = sys.stderr
    doomed = io.StringIO()
    sys.stderr = doomed
    try:
        configure_logging("INFO", "json")
    finally:
        sys.stderr = original
    doomed.close()

    def lookup(nhs_number: str) -> None:
        structlog.get_logger("t").warning("lookup_failed")

    lookup("9690937286")
    captured = capsys.readouterr()
    assert "Logging error" not in captured.err + captured.out
    assert "9690937286" not in captured.err + captured.out
    assert "lookup_failed" in captured.err  # the line went to the stderr of the moment


def test_lines_go_to_the_stderr_of_the_moment_not_of_configuration_time(capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    configure_logging("INFO", "json")
    replacement = io.StringIO()
    original = sys.stderr
    sys.stderr = replacement
    try:
        structlog.get_logger("t").info("after_swap")
    finally:
        sys.stderr = original
    assert "after_swap" in replacement.getvalue()


def _probe_lines(capsys: pytest.CaptureFixture[str], tmp_path: object, headers: dict[str, str]) -> list[dict]:
    import json

    from fastapi.testclient import TestClient

    from xhuma.app import create_app
    from xhuma.config import Settings

    configure_logging("INFO", "json")
    app = create_app(Settings(working_dir=tmp_path))  # type: ignore[arg-type]

    @app.get("/probe")
    async def probe() -> dict[str, str]:
        structlog.get_logger("probe").info("probe_handled", trace_id_of_peer="0a9690937286ff")
        return {}

    capsys.readouterr()
    with TestClient(app) as client:
        client.get("/probe", headers=headers)
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]


def test_our_own_request_and_trace_id_holding_ten_digits_in_a_row_label_the_lines_whole(
    capsys: pytest.CaptureFixture[str], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A random hex id holds ten digits in a row in about one line in forty (CI once met the OpenTelemetry trace id
    # 9f2868129731d10a...): the request's own ids are not redacted, so they still correlate.
    import xhuma.app
    import xhuma.tracing

    ours = "aaaaaaaa-aaaa-4aaa-8aaa-b9690937286f"
    monkeypatch.setattr(xhuma.app, "new_request_id", lambda: ours)
    # Without OpenTelemetry the trace id is made from the request id (another test of this process installs a
    # tracer provider, whose random trace ids would stand in for it).
    monkeypatch.setattr(xhuma.tracing, "enabled", lambda: False)
    (line,) = [line for line in _probe_lines(capsys, tmp_path, {}) if line["event"] == "probe_handled"]
    assert line["request_id"] == ours and line["trace_id"] == ours.replace("-", "")
    assert line["trace_id_of_peer"] == f"0a{REDACTED}ff"  # any other field: redacted as ever


@pytest.mark.parametrize("header", ["X-Request-ID", "X-Trace-ID"])
def test_a_callers_request_or_trace_id_shaped_like_an_nhs_number_is_replaced_by_our_own(
    capsys: pytest.CaptureFixture[str], tmp_path: object, header: str
) -> None:
    lines = _probe_lines(capsys, tmp_path, {header: "nhs-969-093-7286"})
    assert lines and all("7286" not in str(line) for line in lines)
    (line,) = [line for line in lines if line["event"] == "probe_handled"]
    assert line["request_id"] != "nhs-969-093-7286" and line["trace_id"] != "nhs-969-093-7286"


def test_no_access_log_line_per_response_as_xhuma_serve_asks_of_uvicorn() -> None:
    # uvicorn's HTTP protocols write an access line per response when "uvicorn.access" has handlers (hasHandlers),
    # whatever access_log=False said; configuring our logging must not hand it the root's handler.
    configure_logging("INFO", "json")
    assert logging.getLogger("uvicorn.access").hasHandlers() is False
    assert logging.getLogger("uvicorn.error").hasHandlers() is True  # start-up and errors still logged, redacted

"""The command line: one-line configuration errors with exit 3, masked config, and a serve that starts from
nothing at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support.servers import free_port

XHUMA = [sys.executable, "-m", "xhuma"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XHUMA_")}
    env.update(extra)
    return env


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*XHUMA, *args], cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("XHUMA_PROFILE", "production"),
        ("XHUMA_MAX_REQUEST_BYTES", "-5"),
        ("XHUMA_REDIS_URL", "http://cache:6379"),
        ("XHUMA_SAML_VERIFY", "sometimes"),
        ("XHUMA_HOME_COMMUNITY_ID", "not-an-oid"),
        ("XHUMA_DATABASE_URL", "mysql://db/audit"),
    ],
)
def test_bad_setting_is_one_line_and_exit_3(tmp_path: Path, name: str, value: str) -> None:
    result = run("config", "show", cwd=tmp_path, **{name: value})
    assert result.returncode == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert name in lines[0]
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets(tmp_path: Path) -> None:
    result = run(
        "config", "show", cwd=tmp_path,
        XHUMA_ADMIN_TOKENS='["s3cret-token"]', XHUMA_AUDIT_HMAC_KEY="hmac-secret",
        XHUMA_REDIS_URL="redis://user:pw@cache:6379/0",
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "s3cret-token" not in result.stdout and "hmac-secret" not in result.stdout and "pw@" not in result.stdout
    assert shown["admin_tokens"] == "********"
    assert shown["redis_url"] == "redis://********@cache:6379/0"


def test_toml_config_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "xhuma.toml"
    config.write_text('home_community_id = "1.2.3.4"\nttl_document_seconds = 7200\n')
    result = run("--config", str(config), "config", "show", cwd=tmp_path, XHUMA_TTL_DOCUMENT_SECONDS="1800")
    shown = json.loads(result.stdout)
    assert shown["home_community_id"] == "1.2.3.4"
    assert shown["ttl_document_seconds"] == 1800


def test_missing_config_file_is_one_line_exit_3(tmp_path: Path) -> None:
    result = run("--config", str(tmp_path / "absent.toml"), "config", "show", cwd=tmp_path)
    assert result.returncode == 3
    assert "absent.toml" in result.stderr and "Traceback" not in result.stderr


def test_profile_int_takes_nhs_int_defaults_unless_overridden() -> None:
    from xhuma.config import Settings

    settings = Settings(profile="int", pds_base_url="https://pds.example")  # type: ignore[arg-type]
    assert settings.sds_base_url and "int.api.service.nhs.uk" in settings.sds_base_url
    assert settings.pds_base_url == "https://pds.example"
    assert settings.saml_verify.value == "required"
    assert settings.log_format == "json"


def test_serve_with_no_configuration_answers_ready_with_200(tmp_path: Path) -> None:
    """Issue 2: `xhuma serve` with no configuration at all answers GET /health/ready with 200. (How fast it starts
    is a benchmark's business; the deadline here only keeps a hung server from hanging the suite.)"""
    port = free_port()
    process = subprocess.Popen(
        [*XHUMA, "serve", "--port", str(port)], cwd=tmp_path, env=_clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    status = None
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
                status = response.status_code
                break
            except httpx.TransportError:
                time.sleep(0.1)
    finally:
        process.terminate()
        output = process.communicate(timeout=10)[0].decode()
    assert status == 200, output
    assert "Traceback" not in output

"""Profiles int, dep and live refuse to start unless client authentication, SAML verification, the audit
pseudonym key and admin auth are configured: one clear line per missing item (SCAL GEN-05; LESSONS 13, 30)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.pki import Pki

from xhuma.app import create_app
from xhuma.security.startup import InsecureConfiguration, security_problems

CACHE_KEY = "k1:" + "A" * 43 + "="


@pytest.mark.parametrize("profile", ["int", "dep", "live"])
def test_strict_profile_without_security_lists_each_missing_item(make_settings: Any, profile: str) -> None:
    settings = make_settings(profile=profile, saml_verify="optional")
    with pytest.raises(InsecureConfiguration) as caught:
        create_app(settings)
    problems = caught.value.problems
    keys = [line.split(":", 1)[0] for line in problems]
    assert keys == ["XHUMA_CLIENT_CERT_ALLOW_LIST", "XHUMA_TLS_CLIENT_CA_FILE", "XHUMA_SAML_VERIFY",
                    "XHUMA_SAML_TRUSTED_CERTS", "XHUMA_AUDIT_HMAC_KEY", "XHUMA_ADMIN_TOKENS"]
    assert all(f"profile {profile}" in line and "\n" not in line for line in problems)


def strict_settings(make_settings: Any, tmp_path: Path, **overrides: Any) -> Any:
    pki = Pki(tmp_path / "pki")
    server = pki.issue("xhuma", server=True)
    signer = pki.issue("saml signer")
    values: dict[str, Any] = {
        "profile": "live", "tls_cert_file": server.cert_file, "tls_key_file": server.key_file,
        "tls_client_ca_file": pki.ca.cert_file, "client_cert_allow_list": ["CN=Epic Gateway,O=UCLH,C=GB"],
        "saml_trusted_certs": [signer.cert_file], "audit_hmac_key": "h" * 32, "admin_tokens": ["a" * 32],
        "cache_keys": CACHE_KEY,
    }
    values.update(overrides)
    return make_settings(**values)


def test_fully_configured_live_profile_has_no_security_problems(make_settings: Any, tmp_path: Path) -> None:
    assert security_problems(strict_settings(make_settings, tmp_path)) == []


def test_trusted_proxy_can_stand_in_for_direct_client_tls(make_settings: Any, tmp_path: Path) -> None:
    settings = strict_settings(make_settings, tmp_path, tls_client_ca_file=None, tls_cert_file=None,
                               tls_key_file=None, trusted_proxies=["10.1.0.0/16"])
    assert security_problems(settings) == []


def test_weak_secrets_and_missing_files_are_named(make_settings: Any, tmp_path: Path) -> None:
    settings = strict_settings(make_settings, tmp_path, audit_hmac_key="short", admin_tokens=["also-short"],
                               tls_client_ca_file=tmp_path / "missing-ca.pem")
    problems = security_problems(settings)
    assert any(p.startswith("XHUMA_AUDIT_HMAC_KEY: too short") for p in problems)
    assert any(p.startswith("XHUMA_ADMIN_TOKENS: every token") for p in problems)
    assert any(p.startswith("XHUMA_TLS_CLIENT_CA_FILE: file not found") for p in problems)
    assert not any("also-short" in p or "short" == p for p in problems)  # secrets are never echoed


def test_simulator_profile_starts_without_them(make_settings: Any) -> None:
    assert security_problems(make_settings()) == []


def test_cli_serve_in_live_profile_prints_one_line_per_missing_item_and_exits_3(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XHUMA_")}
    env.update(XHUMA_PROFILE="live", XHUMA_CACHE_KEYS=CACHE_KEY, XHUMA_WORKING_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "xhuma", "serve", "--port", "1"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    for key in ("XHUMA_CLIENT_CERT_ALLOW_LIST", "XHUMA_TLS_CLIENT_CA_FILE", "XHUMA_SAML_TRUSTED_CERTS",
                "XHUMA_AUDIT_HMAC_KEY", "XHUMA_ADMIN_TOKENS"):
        assert sum(key + ":" in line for line in lines) == 1, (key, lines)
    assert all(line.startswith("xhuma: configuration error: ") for line in lines)

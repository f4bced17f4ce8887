"""A configuration that cannot work across processes is refused at start-up with one line naming what is missing,
exit status 3 (issue 17): never found out later as an EHR told that an advertised document does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.servers import free_port

from xhuma.app import app_factory
from xhuma.config import ConfigurationError
from xhuma.replicas import replica_problem

CACHE_KEYS = "k1:" + "A" * 43 + "="
HMAC_KEY = "h" * 40
REDIS = "redis://127.0.0.1:6379/15"


def serve(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("XHUMA_")}
    env.update(XHUMA_WORKING_DIR=str(tmp_path), **settings)
    return subprocess.run([sys.executable, "-m", "xhuma", "serve", "--port", str(free_port()), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("settings", "missing", "present"), [
    ({}, ["XHUMA_REDIS_URL", "XHUMA_CACHE_KEYS", "XHUMA_AUDIT_HMAC_KEY"], []),
    ({"XHUMA_REDIS_URL": REDIS}, ["XHUMA_CACHE_KEYS", "XHUMA_AUDIT_HMAC_KEY"], ["XHUMA_REDIS_URL"]),
    ({"XHUMA_REDIS_URL": REDIS, "XHUMA_CACHE_KEYS": CACHE_KEYS}, ["XHUMA_AUDIT_HMAC_KEY"],
     ["XHUMA_REDIS_URL", "XHUMA_CACHE_KEYS"]),
    ({"XHUMA_CACHE_KEYS": CACHE_KEYS, "XHUMA_AUDIT_HMAC_KEY": HMAC_KEY}, ["XHUMA_REDIS_URL"],
     ["XHUMA_CACHE_KEYS", "XHUMA_AUDIT_HMAC_KEY"]),
], ids=["embedded-defaults", "redis-without-keys", "ephemeral-pseudonym-key", "in-process-cache"])
def test_serve_with_two_workers_refuses_state_that_is_not_shared_in_one_line(
    tmp_path: Path, settings: dict[str, str], missing: list[str], present: list[str]
) -> None:
    result = serve(tmp_path, "--workers", "2", **settings)
    assert result.returncode == 3, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, lines
    assert lines[0].startswith("xhuma: configuration error: --workers 2 ")
    for name in missing:
        assert name in lines[0]
    for name in present:
        assert name not in lines[0]


def test_serve_on_a_shared_cache_without_shared_keys_is_refused_even_with_one_worker(tmp_path: Path) -> None:
    result = serve(tmp_path, XHUMA_REDIS_URL=REDIS)
    assert result.returncode == 3, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "XHUMA_CACHE_KEYS" in lines[0] and "XHUMA_AUDIT_HMAC_KEY" in lines[0]


def test_the_embedded_default_with_one_worker_and_a_complete_shared_configuration_pass(make_settings: Any) -> None:
    assert replica_problem(make_settings()) is None
    shared = make_settings(redis_url=REDIS, cache_keys=CACHE_KEYS, audit_hmac_key=HMAC_KEY)
    assert replica_problem(shared, workers=4) is None


def test_the_uvicorn_factory_refuses_a_shared_cache_without_keys(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("XHUMA_WORKING_DIR", str(tmp_path))
    monkeypatch.setenv("XHUMA_REDIS_URL", REDIS)
    with pytest.raises(ConfigurationError, match="XHUMA_CACHE_KEYS"):
        app_factory()

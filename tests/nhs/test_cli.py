"""`xhuma simulate` is registered on the CLI, refuses a data directory that does not exist, and can drop requests
on idle keep-alive connections (``--close-idle-after``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from xhuma.cli import app


def test_simulate_is_a_registered_command() -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0 and "--data" in result.output and "--port" in result.output


def test_simulate_with_a_missing_data_directory_exits_2_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "simulator data directory not found" in result.output


def test_simulate_close_idle_after_drops_a_request_on_an_idle_keep_alive_connection(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("XHUMA_")}
    env["XHUMA_WORKING_DIR"] = str(tmp_path)
    server = subprocess.Popen(
        [sys.executable, "-m", "xhuma", "simulate", "--port", str(port), "--close-idle-after", "0.3"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(200):
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            else:
                raise AssertionError("xhuma simulate did not start")
            time.sleep(0.5)
            with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
                client.get("/health")  # same connection, idle for longer than --close-idle-after
            assert client.get("/health").status_code == 200  # a new connection is served
    finally:
        server.terminate()
        server.wait(timeout=10)

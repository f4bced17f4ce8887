"""The container image for the deployment tests: podman set up (scripts/podman-setup), the base built from Debian
packages or reused (scripts/container-base), and Xhuma's image built from the Containerfile (scripts/container-image).

``xhuma_image`` is the image reference. Podman reads the project's containers.conf (CONTAINERS_CONF, set for the
whole session once the fixture has run, so every podman or podman-compose the tests start uses it). A machine where
podman cannot run fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
IMAGE = "localhost/xhuma:test"
BASE_IMAGE = "localhost/xhuma-base:bookworm"
# Set by xhuma_image, printed at the end of the run (image size and how long each step took).
FIGURES: dict[str, str] = {}


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with the project's containers.conf; a failure shows podman's own words."""
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
    return result


def _script(name: str, *args: str, timeout: float) -> str:
    env = {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}
    result = subprocess.run(["bash", str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                            timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f"scripts/{name} failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n"
                    f"{result.stderr[-6000:]}", pytrace=False)
    return result.stdout


@pytest.fixture(scope="session")
def xhuma_image() -> Iterator[str]:
    """Xhuma's image built from this work tree, as ``localhost/xhuma:test``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONTAINERS_CONF", str(CONTAINERS_CONF))
        started = time.monotonic()
        _script("podman-setup", timeout=900)
        base_existed = podman("image", "exists", BASE_IMAGE, check=False).returncode == 0
        step = time.monotonic()
        _script("container-base", BASE_IMAGE, timeout=900)
        FIGURES["base image"] = ("reused" if base_existed else f"built in {time.monotonic() - step:.0f} s") + \
            f", {int(podman('image', 'inspect', '--format', '{{.Size}}', BASE_IMAGE).stdout) / 1e6:.0f} MB"
        step = time.monotonic()
        _script("container-image", IMAGE, timeout=900)
        size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
        FIGURES["xhuma image"] = f"{size / 1e6:.0f} MB, built in {time.monotonic() - step:.0f} s"
        FIGURES["setup total"] = f"{time.monotonic() - started:.0f} s"
        yield IMAGE


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("container image")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")

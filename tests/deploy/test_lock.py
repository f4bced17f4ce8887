"""The hash-locked dependency files the container image installs from (scripts/lock writes them): in step with
pyproject.toml, every package hashed, and nothing that names an index, a download address or a local path.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
RUNTIME_LOCK = ROOT / "requirements.lock"
BUILD_LOCK = ROOT / "requirements-build.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"  # what scripts/setup, and so CI, installs
LOCKS = [RUNTIME_LOCK, BUILD_LOCK, DEV_LOCK]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked(path: Path) -> dict[str, tuple[Version, list[str]]]:
    """Package name -> (pinned version, its sha256 hashes), from a pip-compile --generate-hashes file."""
    packages: dict[str, tuple[Version, list[str]]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
        match = PIN.match(line)
        if match:
            current = canonicalize_name(match.group(1))
            packages[current] = (Version(match.group(2)), [])
        elif current and line.strip().startswith("--hash="):
            packages[current][1].append(line.strip().removeprefix("--hash=").rstrip(" \\"))
        elif not line.startswith(" "):
            current = None
    return packages


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_lock_pins_every_runtime_dependency_of_pyproject_within_its_declared_range() -> None:
    pins = locked(RUNTIME_LOCK)
    for text in pyproject()["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject.toml) is not in requirements.lock: run scripts/lock"
        version = pins[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside pyproject.toml's {requirement}: run scripts/lock")


def test_lock_pins_the_packages_of_the_extras_pyproject_asks_for() -> None:
    # uvicorn[standard]: the extra's servers (uvloop, httptools) are what the image runs on.
    pins = locked(RUNTIME_LOCK)
    assert {"uvloop", "httptools", "websockets"} <= set(pins)
    assert "cryptography" in pins  # pyjwt[crypto]


def test_dev_lock_pins_every_dependency_and_extra_of_pyproject_within_its_declared_range() -> None:
    # CI installs from requirements-dev.lock with --require-hashes (scripts/setup): it must cover all of pyproject.
    pins = locked(DEV_LOCK)
    project = pyproject()["project"]
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"],
                *project["optional-dependencies"]["otel"]]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} (pyproject.toml) is not in requirements-dev.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements-dev.lock pins {name}=={pins[name][0]}, outside pyproject.toml's {requirement}")


def test_dev_lock_agrees_with_the_image_lock_on_every_runtime_package() -> None:
    # The tests run on the versions the image ships.
    runtime, dev = locked(RUNTIME_LOCK), locked(DEV_LOCK)
    differing = {name: (version, dev[name][0]) for name, (version, _) in runtime.items()
                 if name in dev and dev[name][0] != version}
    assert not differing, f"run scripts/lock: {differing}"


def test_build_lock_pins_the_build_backend_of_pyproject_within_its_range() -> None:
    pins = locked(BUILD_LOCK)
    for text in [*pyproject()["build-system"]["requires"], "cyclonedx-bom"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements-build.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True)


@pytest.mark.parametrize("path", LOCKS, ids=lambda path: path.name)
def test_every_locked_package_has_sha256_hashes(path: Path) -> None:
    pins = locked(path)
    assert len(pins) > 5
    for name, (_version, hashes) in pins.items():
        assert hashes, f"{name} has no hash in {path.name}"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", value) for value in hashes), (name, hashes)


@pytest.mark.parametrize("path", LOCKS, ids=lambda path: path.name)
def test_lock_names_no_index_download_address_or_local_path(path: Path) -> None:
    text = path.read_text()
    for line in text.splitlines():
        stripped = line.strip()
        assert not re.match(r"^(-i|-f|--index-url|--extra-index-url|--find-links|--trusted-host)\b", stripped), line
        assert "://" not in stripped, line
        assert not re.search(r"(^|\s|@)(/|~|\.\./|file:)", stripped.split("#", 1)[0]), line
    # Every requirement line is a plain name==version pin (no URL or path requirement).
    requirement_lines = [line for line in text.splitlines() if line and not line[0].isspace() and line[0] != "#"]
    assert requirement_lines and all(PIN.match(line) for line in requirement_lines), requirement_lines

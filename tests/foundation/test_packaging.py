"""Packaging and governance (issue 16): the wheel carries the licence and every SOURCES.md provenance file next
to the vendored files it describes; LICENSE matches the metadata; SECURITY.md and CHANGELOG.md exist."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "xhuma"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    target = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--quiet", "-w",
                             str(target)], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = target.glob("xhuma-*.whl")
    return zipfile.ZipFile(built)


def test_every_provenance_file_of_the_package_is_in_the_wheel(wheel: zipfile.ZipFile) -> None:
    sources = sorted(path.relative_to(PACKAGE.parent).as_posix() for path in PACKAGE.rglob("SOURCES.md"))
    assert len(sources) >= 2  # the CDA schema and schematron, the simulator's data
    names = set(wheel.namelist())
    for source in sources:
        assert source in names, source
        # ... beside the files it describes
        folder = source.rsplit("/", 1)[0]
        assert any(name.startswith(f"{folder}/") and name != source for name in names), folder


def test_the_wheel_carries_the_licence_its_metadata_names(wheel: zipfile.ZipFile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    metadata = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    assert f"License-Expression: {project['license']}" in wheel.read(metadata).decode()
    licence = next(name for name in wheel.namelist() if name.endswith(".dist-info/licenses/LICENSE"))
    assert wheel.read(licence) == (ROOT / "LICENSE").read_bytes()


def test_licence_file_is_the_mit_licence_of_the_metadata() -> None:
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


def test_security_policy_says_how_to_report_and_which_versions_are_supported() -> None:
    text = (ROOT / "SECURITY.md").read_text()
    assert "## Supported versions" in text and "## Reporting a vulnerability" in text
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"{version.rsplit('.', 1)[0]}.x" in text


def test_changelog_follows_keep_a_changelog() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "[Keep a Changelog](https://keepachangelog.com/" in text and "## [Unreleased]" in text
    headings = {line for line in text.splitlines() if line.startswith("### ")}
    assert headings <= {f"### {kind}" for kind in ("Added", "Changed", "Deprecated", "Removed", "Fixed",
                                                   "Security")}

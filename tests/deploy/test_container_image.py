"""The container image as built from the Containerfile: hadolint clean, OCI labels, a fixed non-root user, a final
stage without compilers, pip or development tools, the working directory as its only declared volume, and a
CycloneDX SBOM that lists exactly the locked packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name
from tests.deploy.conftest import ROOT, podman
from tests.deploy.test_lock import RUNTIME_LOCK, locked

HADOLINT = Path(sys.executable).parent / "hadolint"
UID = "10001"


def inspect(image: str, template: str) -> str:
    return podman("image", "inspect", "--format", template, image).stdout.strip()


def run_python(image: str, code: str, *options: str) -> str:
    """Run ``python3 -c code`` in the image (its own user, read-only root) and return what it printed."""
    result = podman("run", "--rm", "--read-only", "--network", "none", *options, "--entrypoint", "python3", image,
                    "-c", code)
    return result.stdout


def test_hadolint_finds_nothing_in_the_containerfile() -> None:
    result = subprocess.run([str(HADOLINT), "--failure-threshold", "info", str(ROOT / "Containerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_labels_carry_version_revision_source_and_licence(xhuma_image: str) -> None:
    labels = json.loads(inspect(xhuma_image, "{{json .Config.Labels}}"))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "MIT"
    assert labels["org.opencontainers.image.source"]
    revision = labels["org.opencontainers.image.revision"]
    if (ROOT / ".git").exists():  # built from a git checkout: a commit of it
        assert len(revision) == 40
        assert subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{revision}^{{commit}}"]).returncode == 0
    else:
        assert revision == "unknown"
    # The same revision labels xhuma_build_info on /metrics.
    assert run_python(xhuma_image, "import os; print(os.environ['XHUMA_BUILD_REVISION'])").strip() == revision


def test_image_runs_as_a_fixed_non_root_uid(xhuma_image: str) -> None:
    assert inspect(xhuma_image, "{{.Config.User}}") == f"{UID}:{UID}"
    assert run_python(xhuma_image, "import os; print(os.getuid(), os.getgid())").split() == [UID, UID]


def test_working_directory_is_the_declared_volume_and_the_root_is_read_only(xhuma_image: str) -> None:
    assert json.loads(inspect(xhuma_image, "{{json .Config.Volumes}}")) == {"/var/lib/xhuma": {}}
    assert inspect(xhuma_image, "{{.Config.WorkingDir}}") == "/var/lib/xhuma"
    code = """
import os, pathlib
print(os.getcwd(), os.environ["XHUMA_WORKING_DIR"])
pathlib.Path("audit-probe").write_text("ok")      # the volume is writable by the image's user
pathlib.Path("/tmp/probe").write_text("ok")       # so is the tmpfs
try:
    pathlib.Path("/opt/xhuma/probe").write_text("x")
    print("root writable")
except OSError as error:
    print("root", error.strerror)
"""
    out = run_python(xhuma_image, code, "--tmpfs", "/tmp").splitlines()
    assert out == ["/var/lib/xhuma /var/lib/xhuma", "root Read-only file system"], out


def test_final_stage_has_no_compiler_pip_or_development_tool(xhuma_image: str) -> None:
    code = """
import importlib.util, os, shutil
print([tool for tool in ("gcc", "cc", "c++", "make", "pip", "pip3") if shutil.which(tool)])
print([name for name in ("pip", "pytest", "ruff", "mypy", "setuptools", "piptools", "cyclonedx")
       if importlib.util.find_spec(name)])
print(os.path.exists("/opt/build"), os.path.exists("/src"), os.path.exists("/wheels"))
"""
    assert run_python(xhuma_image, code).splitlines() == ["[]", "[]", "False False False"]


def test_sbom_lists_exactly_the_locked_packages_at_their_locked_versions(xhuma_image: str) -> None:
    sbom = json.loads(podman("run", "--rm", "--network", "none", "--entrypoint", "cat", xhuma_image,
                             "/usr/share/xhuma/sbom.cdx.json").stdout)
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["metadata"]["component"]["name"] == "xhuma"
    in_sbom = {canonicalize_name(component["name"]): component["version"] for component in sbom["components"]}
    in_sbom.pop("xhuma", None)  # the project itself, also the SBOM's main component
    pins = {name: str(version) for name, (version, _hashes) in locked(RUNTIME_LOCK).items()}
    assert in_sbom == pins
    assert all(component.get("purl", "").startswith("pkg:pypi/") for component in sbom["components"])


def test_the_installed_packages_are_the_locked_ones(xhuma_image: str) -> None:
    code = "import importlib.metadata as m; print('\\n'.join(f'{d.name}=={d.version}' for d in m.distributions()))"
    installed = {canonicalize_name(line.split("==")[0]): line.split("==")[1]
                 for line in run_python(xhuma_image, code).splitlines()}
    version = installed.pop("xhuma")
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert installed == {name: str(pin) for name, (pin, _hashes) in locked(RUNTIME_LOCK).items()}

"""What the container image costs: its size (and each layer's), and how long it takes to build from nothing, after a
change of Xhuma's code, and with nothing changed. Uses throw-away tags, so the images the tests use stay as they are.

    python bench/container_image.py [--fresh-base]

--fresh-base also times building the Debian-package base (scripts/container-base --rebuild), as on a new machine;
without it the existing base is used. The no-cache build fetches the locked wheels from the package index.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf")}
BASE = "localhost/xhuma-base:bookworm"
BENCH_BASE = "localhost/xhuma-base:bench"
BENCH_IMAGE = "localhost/xhuma:bench"
CONTEXT = ["Containerfile", ".dockerignore", "pyproject.toml", "README.md", "requirements.lock",
           "requirements-build.lock", "src"]


def podman(*args: str) -> str:
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True, env=ENV).stdout


def timed(command: list[str], cwd: Path = ROOT) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def build(context: Path, base: str, *options: str) -> float:
    trust = []
    bundle = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    if Path(bundle).is_file():
        trust = ["--volume", f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"]
    return timed(["podman", "build", "--quiet", "--network", "host", *trust, *options, "--build-arg",
                  f"BASE={base}", "--tag", BENCH_IMAGE, "--file", "Containerfile", "."], cwd=context)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh-base", action="store_true", help="also time building the base from Debian packages")
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "podman-setup")], check=True, env=ENV)
    base = BASE
    figures: list[tuple[str, str]] = []
    try:
        if args.fresh_base:
            seconds = timed(["bash", "scripts/container-base", "--rebuild", BENCH_BASE])
            base = BENCH_BASE
            figures.append(("base from Debian packages", f"{seconds:.0f} s"))
        else:
            subprocess.run(["bash", "scripts/container-base", BASE], check=True, cwd=ROOT, env=ENV)
        with tempfile.TemporaryDirectory() as directory:
            context = Path(directory)
            for name in CONTEXT:
                source = ROOT / name
                if source.is_dir():
                    shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
                else:
                    shutil.copy2(source, context / name)
            figures.append(("image, no cache", f"{build(context, base, '--no-cache'):.0f} s"))
            with (context / "src" / "xhuma" / "__init__.py").open("a") as module:
                module.write("\n# bench/container_image.py: a change of Xhuma's code\n")
            figures.append(("image after a code change", f"{build(context, base):.0f} s"))
            figures.append(("image, nothing changed", f"{build(context, base):.0f} s"))
        size = int(podman("image", "inspect", "--format", "{{.Size}}", BENCH_IMAGE))
        figures.append(("image size", f"{size / 1e6:.0f} MB"))
        base_size = int(podman("image", "inspect", "--format", "{{.Size}}", base))
        figures.append(("  of which the base", f"{base_size / 1e6:.0f} MB"))
        usage = podman("run", "--rm", "--network", "none", "--entrypoint", "du", BENCH_IMAGE, "-s", "-B", "1000000",
                       "/opt/xhuma", "/opt/xhuma-app")
        for line in usage.splitlines():
            megabytes, path = line.split()
            what = "locked dependencies" if path == "/opt/xhuma" else "Xhuma"
            figures.append((f"  of which {what} ({path})", f"{megabytes} MB"))
        load = os.getloadavg()
        figures.append(("load average during the run", f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"))
    finally:
        subprocess.run(["podman", "rmi", "--force", BENCH_IMAGE], env=ENV, capture_output=True)
        if base == BENCH_BASE:
            subprocess.run(["podman", "rmi", "--force", BENCH_BASE], env=ENV, capture_output=True)
    for name, value in figures:
        print(f"{name:40} {value}")


if __name__ == "__main__":
    main()

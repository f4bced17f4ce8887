"""The Compose stack (compose.yaml): the file checked as podman-compose reads it, then its Xhuma services run from
the locally built image with podman-compose. Images cannot be pulled in CI, so tests/deploy/compose.ci.yaml puts
them on the host network against the CI's own Redis and PostgreSQL; the EHR demo (`xhuma demo --url`) then passes
through one replica, and the document it found is retrieved through the other.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import redis
import yaml

from xhuma.app import create_app
from xhuma.config import ENV_PREFIX, Settings
from xhuma.ihe.demo import _envelope, iti39_request, mtom, soap_parts
from xhuma.ihe.soap import XOP
from xhuma.ihe.xca_retrieve import XDSB
from xhuma.store.crypto import new_key_text

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
CI_OVERRIDE = Path(__file__).resolve().parent / "compose.ci.yaml"
PODMAN_COMPOSE = Path(sys.executable).parent / "podman-compose"
XHUMA_CLI = Path(sys.executable).parent / "xhuma"
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
GATEWAYS = ("xhuma-a", "xhuma-b")
XHUMA_SERVICES = (*GATEWAYS, "migrate", "simulator")
# The variables the stack cannot start without; .env.example names each, compose.yaml never holds a value.
REQUIRED_SECRETS = ("POSTGRES_PASSWORD", "XHUMA_CACHE_KEYS", "XHUMA_AUDIT_HMAC_KEY")
# The CI's own Redis database for this test (the suite's other tests use db 15) and its PostgreSQL server.
CI_REDIS_DB = 13
PG_ADMIN_URL = os.environ.get("XHUMA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def compose_env() -> dict[str, str]:
    """A clean environment for podman-compose: nothing of the developer's XHUMA_* or .env leaks in."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    env["CONTAINERS_CONF"] = os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return env


def podman_compose(*args: str, env_file: Path, files: tuple[Path, ...] = (COMPOSE_FILE,),
                   project: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [str(PODMAN_COMPOSE), "--env-file", str(env_file)]
    for file in files:
        command += ["-f", str(file)]
    if project:
        command += ["-p", project, "--in-pod", "false"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=timeout, env=compose_env(),
                          cwd=ROOT)


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


# The Compose Specification's schema (tests/deploy/data/SOURCES.md): what Docker Compose and podman-compose accept.
COMPOSE_SPEC = Path(__file__).resolve().parent / "data" / "compose-spec.json"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def stack_secrets() -> dict[str, str]:
    return {"POSTGRES_PASSWORD": secrets.token_hex(16), "XHUMA_CACHE_KEYS": new_key_text("ci"),
            "XHUMA_AUDIT_HMAC_KEY": secrets.token_urlsafe(48)}


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment") or {}
    assert isinstance(environment, dict), "environments are maps (overrides merge them by name)"
    return {name: str(value) for name, value in environment.items()}


# --- The file -------------------------------------------------------------------------------------------------------
def test_compose_file_has_two_gateways_and_their_shared_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {*XHUMA_SERVICES, "redis", "postgres", "prometheus"}
    a, b = (compose["services"][name] for name in GATEWAYS)
    assert a["command"][0] == b["command"][0] == "serve"
    assert environment_of(a) == environment_of(b)  # the same Redis, database, keys and NHS services
    assert compose["services"]["migrate"]["command"] == ["db", "upgrade"]
    assert compose["services"]["simulator"]["command"][0] == "simulate"


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(json.loads(COMPOSE_SPEC.read_text()))
    assert [f"{list(error.path)}: {error.message}" for error in validator.iter_errors(compose)] == []
    # ... and the schema is strict enough to catch a misspelt service key.
    misspelt = copy.deepcopy(compose)
    misspelt["services"]["xhuma-a"]["depends-on"] = misspelt["services"]["xhuma-a"].pop("depends_on")
    assert not validator.is_valid(misspelt)


def test_podman_compose_reads_the_file_with_the_secrets_given(tmp_path: Path) -> None:
    given = stack_secrets()
    result = podman_compose("config", env_file=write_env_file(tmp_path / "stack.env", given))
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in GATEWAYS:
        environment = services[name]["environment"]
        assert environment["XHUMA_CACHE_KEYS"] == given["XHUMA_CACHE_KEYS"]
        assert environment["XHUMA_AUDIT_HMAC_KEY"] == given["XHUMA_AUDIT_HMAC_KEY"]
        assert f":{given['POSTGRES_PASSWORD']}@postgres:5432/" in environment["XHUMA_DATABASE_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == given["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("missing", REQUIRED_SECRETS)
def test_the_stack_refuses_to_start_without_each_secret(tmp_path: Path, missing: str) -> None:
    values = {**stack_secrets(), missing: ""}
    result = podman_compose("config", env_file=write_env_file(tmp_path / "partial.env", values))
    assert result.returncode != 0
    assert f"set {missing} in .env" in result.stderr


def test_no_secret_value_is_written_in_the_compose_file(compose: dict[str, Any]) -> None:
    secret_settings = {ENV_PREFIX + name.upper() for name, field in Settings.model_fields.items()
                       if "SecretStr" in str(field.annotation)}
    for name, service in compose["services"].items():
        for variable, value in environment_of(service).items():
            if variable in secret_settings and variable not in ("XHUMA_PDS_API_KEY", "XHUMA_SDS_API_KEY"):
                assert value.startswith("${" + variable), f"{name}: {variable} must come from .env"
            if "PASSWORD" in variable or variable == "XHUMA_DATABASE_URL":
                assert "${POSTGRES_PASSWORD:?" in value, f"{name}: {variable} must take the password from .env"
    # The two PDS/SDS keys are the simulator's fixed development identifiers, not credentials of any NHS service.
    from xhuma.nhs.simulator.app import DEFAULT_API_KEY
    from xhuma.nhs.wiring import SIMULATOR_SDS_API_KEY

    gateway = environment_of(compose["services"]["xhuma-a"])
    assert gateway["XHUMA_PDS_API_KEY"] == DEFAULT_API_KEY
    assert gateway["XHUMA_SDS_API_KEY"] == SIMULATOR_SDS_API_KEY


def test_env_example_names_every_required_secret_without_a_value() -> None:
    lines = (ROOT / ".env.example").read_text().splitlines()
    assigned = dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))
    assert {name: "" for name in REQUIRED_SECRETS} == assigned
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


def test_every_xhuma_variable_of_the_compose_file_is_a_setting(compose: dict[str, Any]) -> None:
    names = {name for service in compose["services"].values() for name in environment_of(service)
             if name.startswith(ENV_PREFIX)}
    assert names and {name for name in names if name[len(ENV_PREFIX):].lower() not in Settings.model_fields} == set()


def test_gateways_start_after_the_migration_redis_and_the_simulator(compose: dict[str, Any]) -> None:
    for name in GATEWAYS:
        assert compose["services"][name]["depends_on"] == {
            "migrate": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
            "simulator": {"condition": "service_healthy"},
        }
    assert compose["services"]["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert compose["services"]["migrate"]["restart"] == "no"  # one-shot, never per replica


def test_every_long_running_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name in (*GATEWAYS, "simulator", "redis", "postgres"):
        assert compose["services"][name]["healthcheck"]["test"][0] == "CMD", name
    for name in GATEWAYS:
        assert "/health/ready" in compose["services"][name]["healthcheck"]["test"][-1]


def test_every_xhuma_container_is_non_root_with_a_read_only_root(compose: dict[str, Any]) -> None:
    containerfile = (ROOT / "Containerfile").read_text()
    image_user = re.findall(r"^USER\s+(\S+)", containerfile, re.MULTILINE)[-1]
    for name in XHUMA_SERVICES:
        service = compose["services"][name]
        assert service["user"] == image_user and not service["user"].startswith("0"), name
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_observability_profile_scrapes_metrics_of_both_gateways(compose: dict[str, Any], make_settings: Any) -> None:
    prometheus = compose["services"]["prometheus"]
    assert prometheus["profiles"] == ["observability"]
    assert all("profiles" not in compose["services"][name] for name in XHUMA_SERVICES)
    config_path = prometheus["volumes"][0].split(":")[0]
    config = yaml.safe_load((ROOT / config_path).read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "xhuma")
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    ports = {compose["services"][name]["command"][-1] for name in GATEWAYS}
    assert targets == {f"{name}:{port}" for name in GATEWAYS for port in ports}
    routes = {getattr(route, "path", None) for route in create_app(make_settings()).routes}
    assert job["metrics_path"] in routes


# --- The stack, run --------------------------------------------------------------------------------------------------
async def pg_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningStack:
    project: str
    ports: dict[str, int]
    env_file: Path
    redis_namespace: str

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def containers(self, service: str | None = None) -> list[str]:
        filters = ["--filter", f"label=io.podman.compose.project={self.project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        result = subprocess.run(["podman", "ps", "-a", "--format", "{{.Names}}", *filters],
                                capture_output=True, text=True, check=True, env=compose_env())
        return result.stdout.split()

    def container(self, service: str) -> str:
        names = self.containers(service)
        assert len(names) == 1, f"{service}: {names}"
        return names[0]

    def up(self, *services: str) -> None:
        result = podman_compose("up", "-d", *services, env_file=self.env_file, files=(COMPOSE_FILE, CI_OVERRIDE),
                                project=self.project)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    def logs(self, service: str) -> str:
        result = subprocess.run(["podman", "logs", "--tail", "40", self.container(service)], capture_output=True,
                                text=True, env=compose_env())
        return result.stdout[-3000:] + result.stderr[-3000:]


def wait_for(url: str, stack: RunningStack, service: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail(f"{service} not ready at {url}:\n{stack.logs(service)}")


@pytest.fixture
def stack(xhuma_image: str, tmp_path: Path) -> Iterator[RunningStack]:
    """compose.yaml's Xhuma services, started in its dependency order, on the CI's Redis and a fresh database."""
    token = uuid.uuid4().hex[:10]
    database = f"xhuma_compose_{token}"
    asyncio.run(pg_admin(f'CREATE DATABASE "{database}"'))
    server = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql+asyncpg://", "postgresql://")
    namespace = f"xhuma-compose-{token}"
    ports = {"simulator": free_port(), "xhuma-a": free_port(), "xhuma-b": free_port()}
    env_file = write_env_file(tmp_path / "ci.env", {
        "XHUMA_IMAGE": xhuma_image,
        "POSTGRES_PASSWORD": "unused-the-ci-database-trusts-loopback",
        "XHUMA_CACHE_KEYS": new_key_text("ci"),
        "XHUMA_AUDIT_HMAC_KEY": secrets.token_urlsafe(48),
        "CI_REDIS_URL": f"redis://127.0.0.1:6379/{CI_REDIS_DB}",
        "CI_REDIS_NAMESPACE": namespace,
        "CI_DATABASE_URL": f"{server}/{database}",
        "CI_SIMULATOR_PORT": str(ports["simulator"]),
        "CI_XHUMA_A_PORT": str(ports["xhuma-a"]),
        "CI_XHUMA_B_PORT": str(ports["xhuma-b"]),
    })
    running = RunningStack(f"xhuma-ci-{token}", ports, env_file, namespace)
    try:
        yield running
    finally:
        # What `down -v` does, plus the containers' anonymous volumes (the image's VOLUME), which it leaves behind.
        names = running.containers()
        if names:
            subprocess.run(["podman", "rm", "--force", "--volumes", "--time", "10", *names], capture_output=True,
                           env=compose_env(), timeout=120)
        volumes = subprocess.run(["podman", "volume", "ls", "--quiet", "--filter",
                                  f"label=io.podman.compose.project={running.project}"],
                                 capture_output=True, text=True, env=compose_env()).stdout.split()
        if volumes:
            subprocess.run(["podman", "volume", "rm", "--force", *volumes], capture_output=True, env=compose_env())
        client = redis.Redis.from_url(f"redis://127.0.0.1:6379/{CI_REDIS_DB}")
        keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        asyncio.run(pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def retrieve(url: str, unique_id: str) -> bytes:
    """ITI-39 for one document through ``url``, as the demo's EHR sends it (MTOM)."""
    settings = Settings()
    envelope, _ = _envelope("urn:ihe:iti:2007:CrossGatewayRetrieve",
                            iti39_request(settings.home_community_urn, settings.repository_unique_id, unique_id))
    body, content_type = mtom(envelope)
    response = httpx.post(f"{url}/SOAP/iti39", content=body, headers={"content-type": content_type}, timeout=30)
    root, attachments = soap_parts(response)
    document = root.find(f".//{{{XDSB}}}DocumentResponse/{{{XDSB}}}Document")
    assert document is not None, response.text[:2000]
    include = document.find(f"{{{XOP}}}Include")
    assert include is not None
    return attachments[include.get("href", "")[4:]]


def test_the_compose_stack_serves_the_demo_and_either_replica_retrieves_its_document(
    stack: RunningStack, tmp_path: Path
) -> None:
    # compose.yaml's order: the simulator and the one-shot migration first, the gateways once both are done.
    stack.up("simulator", "migrate")
    migrate = stack.container("migrate")
    exit_code = subprocess.run(["podman", "wait", migrate], capture_output=True, text=True, env=compose_env(),
                               timeout=120).stdout.strip()
    assert exit_code == "0", stack.logs("migrate")
    wait_for(f"{stack.url('simulator')}/health", stack, "simulator")
    stack.up(*GATEWAYS)
    for name in GATEWAYS:
        wait_for(f"{stack.url(name)}/health/ready", stack, name)

    # As compose.yaml runs them: the image's non-root user, a read-only root, a tmpfs /tmp.
    for name in XHUMA_SERVICES:
        inspected = subprocess.run(
            ["podman", "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.Tmpfs}}",
             stack.container(name)], capture_output=True, text=True, check=True, env=compose_env(),
        ).stdout.split(maxsplit=2)
        assert inspected[0] == "10001:10001" and inspected[1] == "true" and "/tmp" in inspected[2], (name, inspected)

    # compose.yaml's own healthcheck commands succeed inside the running containers (at this run's ports).
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    for name, stack_port in (("xhuma-a", 8000), ("xhuma-b", 8000), ("simulator", 8100)):
        command = [part.replace(f":{stack_port}/", f":{stack.ports[name]}/")
                   for part in compose["services"][name]["healthcheck"]["test"][1:]]
        result = subprocess.run(["podman", "exec", stack.container(name), *command], capture_output=True, text=True,
                                env=compose_env(), timeout=30)
        assert result.returncode == 0, (name, result.stderr[-2000:])

    # The EHR demo through replica A, from this machine's xhuma.
    ccd_path = tmp_path / "demo-ccd.xml"
    demo = subprocess.run([str(XHUMA_CLI), "demo", "--url", stack.url("xhuma-a"), "--out", str(ccd_path)],
                          capture_output=True, text=True, timeout=120, env=compose_env(), cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "done: the EHR found the patient" in demo.stdout
    unique_id = re.search(r"uniqueId (\S+),", demo.stdout)
    assert unique_id is not None, demo.stdout

    # The document found through A is retrieved through B: same bytes.
    ccd = ccd_path.read_bytes()
    from_b = retrieve(stack.url("xhuma-b"), unique_id.group(1))
    assert hashlib.sha256(from_b).hexdigest() == hashlib.sha256(ccd).hexdigest()

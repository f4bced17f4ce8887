"""Xhuma's image run as a platform team runs it: two gateway containers and the NHS simulator in a third, on the
host network, read-only root filesystems with a tmpfs /tmp and a volume for the working directory, against the
CI's real Redis (its own database, 14) and PostgreSQL (a database of this test's own), sharing the cache keys and
the audit pseudonym key. The audit schema is migrated once by a one-shot container.

The split exchange: ITI-55 and ITI-38 through gateway A, ITI-39 for the document A advertised through gateway B.
Then stops: SIGTERM lets an in-flight request finish and its audit event land before the process exits cleanly,
and a request that outlasts --timeout-graceful-shutdown does not hold the stop past that bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from tests.deploy.conftest import podman
from tests.support.exchange import IDENTIFYING, MESSAGE_IDS, discover, find_document, full_exchange, retrieve
from tests.support.soap import ACTION_38, RIM, SOAP_CT, body_of, envelope, iti38_body, parse_response
from tests.support.soap import retrieved_document as document_of

from xhuma.ccda.validate import validate_bytes
from xhuma.nhs.simulator.patients import DEMO_PATIENT, Fault, fault_patient
from xhuma.nhs.wiring import SIMULATOR_SDS_API_KEY
from xhuma.store.crypto import new_key_text

REDIS_URL = "redis://127.0.0.1:6379/14"  # the suite's other tests use db 15, the Compose test 13
PG_ADMIN_URL = os.environ.get("XHUMA_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
SECOND_PATIENT = "9690937278"  # the simulator's other UCLH record: cold for the stop test
GPC_LATENCY_MS = 2000  # every GP Connect call of the simulator takes this long: a request stays in flight
STOP_BOUND_SECONDS = 3  # --timeout-graceful-shutdown of the gateway stopped with a request that never finishes
UID = "10001"


async def _pg_admin(statement: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _pg_value(database_url: str, query: str, *args: object) -> object:
    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


HANDED_OUT: set[int] = set()


def spare_port() -> int:
    """A free loopback port below the kernel's ephemeral range: the gateways bind theirs seconds after it is picked,
    and a port from the ephemeral range could meanwhile be handed to anything binding port 0 (the in-process
    simulator of the embedded gateway among them)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(1024, low - 12000), low)
        if port in HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        HANDED_OUT.add(port)
        return port


def wait_for_port(port: int, container: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip() != "true":
                break
            time.sleep(0.2)
    raise AssertionError(f"{container} is not listening on {port}:\n{logs(container)[-4000:]}")


def logs(container: str) -> str:
    result = podman("logs", container, check=False)
    return result.stdout + result.stderr


@dataclass
class Stack:
    image: str
    run_id: str
    database_url: str
    environment: dict[str, str]
    key_file: Path
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)
    gateways: dict[str, int] = field(default_factory=dict)

    def run(self, name: str, *args: str, environment: dict[str, str] | None = None, detach: bool = True,
            volume_of: str | None = None, entrypoint: str | None = None, timeout: float = 120) -> str:
        """A container of the image on the host network with the hardening a deployment uses, its working
        directory on a volume of its own (or ``volume_of`` another's); returns its name (detached) or what it
        printed (one-shot)."""
        container = self.container(name)
        volume = f"{self.container(volume_of or name)}-data"
        options = ["--name", container, "--network", "host", "--read-only", "--tmpfs", "/tmp",
                   "--cap-drop", "all", "--security-opt", "no-new-privileges",
                   "--volume", f"{volume}:/var/lib/xhuma",
                   "--volume", f"{self.key_file}:/run/xhuma/pds-key.pem:ro"]
        for variable, value in (environment if environment is not None else self.environment).items():
            options += ["--env", f"{variable}={value}"]
        if entrypoint:
            options += ["--entrypoint", entrypoint]
        self.volumes.append(volume)
        if detach:
            self.containers.append(container)
            podman("run", "--detach", *options, self.image, *args)
            return container
        result = podman("run", "--rm", *options, self.image, *args, timeout=timeout)
        return result.stdout + result.stderr

    def start_gateway(self, name: str, *serve_options: str, environment: dict[str, str] | None = None) -> None:
        """Start ``xhuma serve`` in a container (not waiting for it: see ``wait_until_ready``)."""
        port = spare_port()
        self.run(name, "serve", "--host", "127.0.0.1", "--port", str(port), *serve_options, environment=environment)
        self.gateways[name] = port

    def wait_until_ready(self) -> None:
        for name, port in self.gateways.items():
            wait_for_ready(port, self.container(name))

    def container(self, name: str) -> str:
        return f"xhuma-test-{self.run_id}-{name}"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.gateways[name]}"

    def remove(self) -> None:
        for container in self.containers:
            podman("rm", "--force", "--time", "0", container, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)


def wait_for_ready(port: int, container: str, seconds: float = 60) -> None:
    wait_for_port(port, container, seconds)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        response = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5)
        if response.status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"{container} never ready: {response.text}\n{logs(container)[-4000:]}")


@pytest.fixture(scope="module")
def stack(xhuma_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    run_id = uuid.uuid4().hex[:8]
    database = f"xhuma_container_{run_id}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{database}"'))
    key_file = tmp_path_factory.mktemp("container") / "pds-key.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o644)  # read by the image's user (10001) through the read-only bind mount
    database_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://')}/{database}"
    credentials = {
        "XHUMA_PDS_PRIVATE_KEY_FILE": "/run/xhuma/pds-key.pem",
        "XHUMA_PDS_KID": f"container-test-{run_id}",
        "XHUMA_PDS_API_KEY": f"container-test-api-key-{run_id}",
        "XHUMA_LOG_LEVEL": "INFO",
    }
    simulator_port = spare_port()
    simulator = f"http://127.0.0.1:{simulator_port}"
    environment = {
        **credentials,
        "XHUMA_REDIS_URL": REDIS_URL,
        "XHUMA_REDIS_NAMESPACE": f"xhuma-container-{run_id}",
        "XHUMA_CACHE_KEYS": new_key_text("container"),
        "XHUMA_AUDIT_HMAC_KEY": uuid.uuid4().hex,
        "XHUMA_DATABASE_URL": database_url,
        "XHUMA_PDS_BASE_URL": f"{simulator}/pds/personal-demographics/FHIR/R4",
        "XHUMA_PDS_TOKEN_URL": f"{simulator}/pds/oauth2/token",
        "XHUMA_SDS_BASE_URL": f"{simulator}/sds/spine-directory/FHIR/R4",
        "XHUMA_GPC_SSP_URL": f"{simulator}/ssp",
        "XHUMA_SDS_API_KEY": SIMULATOR_SDS_API_KEY,
        "XHUMA_HTTP_RETRIES": "0",
    }
    stack = Stack(xhuma_image, run_id, database_url, environment, key_file)
    try:
        name = stack.run("simulator", "simulate", "--host", "127.0.0.1", "--port", str(simulator_port),
                         environment={**credentials, "XHUMA_SIMULATOR_GPC_LATENCY_MS": str(GPC_LATENCY_MS)})
        migrated = stack.run("migrate", "db", "upgrade", detach=False)
        assert "audit database is at the latest revision" in migrated, migrated
        # The two gateways of the split exchange, and one for each stop test, started together.
        stack.start_gateway("a")
        stack.start_gateway("b")
        stack.start_gateway("stop-graceful")
        stack.start_gateway("stop-bounded", "--timeout-graceful-shutdown", str(STOP_BOUND_SECONDS))
        stack.start_gateway("embedded", environment={})  # no configuration: simulator, memory cache, SQLite
        wait_for_port(simulator_port, name)
        stack.wait_until_ready()
        yield stack
    finally:
        stack.remove()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"xhuma-container-{run_id}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


async def test_split_exchange_iti55_and_iti38_on_one_container_iti39_on_the_other(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url("a"), timeout=60) as a, \
            httpx.AsyncClient(base_url=stack.url("b"), timeout=60) as b:
        await discover(a)
        document = await find_document(a)
        response = await retrieve(b, document)
    assert response.status_code == 200, response.text[:2000]
    ccd = document_of(response)
    assert validate_bytes(ccd).valid
    patient_ids = etree.fromstring(ccd).findall(".//{urn:hl7-org:v3}recordTarget/{urn:hl7-org:v3}patientRole/"
                                                "{urn:hl7-org:v3}id")
    assert DEMO_PATIENT in [element.get("extension") for element in patient_ids]
    # Both gateways audited into the one shared PostgreSQL database.
    transactions = await _pg_value(stack.database_url, "SELECT string_agg(DISTINCT transaction, ',' ORDER BY "
                                   "transaction) FROM audit_event WHERE document_unique_id = $1 OR "
                                   "transaction = 'ITI-55'", document.unique_id)
    assert {"ITI-38", "ITI-39", "ITI-55"} <= set(str(transactions).split(","))
    for name in ("a", "b"):  # the containers' logs carry no patient data
        log = logs(stack.container(name))
        assert '"transaction"' in log
        assert not [value for value in IDENTIFYING if value in log], name


def test_gateways_are_ready_on_redis_and_postgresql(stack: Stack) -> None:
    for name in ("a", "b"):
        ready = httpx.get(f"{stack.url(name)}/health/ready", timeout=5).json()
        assert ready["status"] == "ready", ready
        assert ready["checks"]["cache"]["backend"] == "redis"
        assert ready["checks"]["audit"]["ok"] is True


def test_the_serving_process_runs_as_the_non_root_uid(stack: Stack) -> None:
    for container in (stack.container("a"), stack.container("b")):
        status = podman("exec", container, "cat", "/proc/1/status").stdout
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert uids == [UID] * 4, (container, uids)
        command = podman("exec", container, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert "serve" in command, command  # PID 1 is xhuma serve itself (exec form, no shell in between)


def _iti38(nhs: str, message_id: str) -> bytes:
    return envelope(ACTION_38, iti38_body(nhs=nhs), message_id=message_id)


async def _stop_while_in_flight(stack: Stack, name: str, nhs: str,
                                message_id: str) -> tuple[httpx.Response | BaseException, float, dict]:
    """Send ITI-38 for ``nhs`` to gateway ``name``, SIGTERM its container while the request is in flight (podman
    stop, 30 s before a SIGKILL) and return the response (or the client's error), how long the stop took, and the
    container's final state."""
    container = stack.container(name)
    async with httpx.AsyncClient(base_url=stack.url(name), timeout=60) as client:
        request = asyncio.create_task(client.post("/SOAP/iti38", content=_iti38(nhs, message_id),
                                                  headers={"content-type": SOAP_CT}))
        await asyncio.sleep(0.7)  # the gateway is waiting on GP Connect (GPC_LATENCY_MS) or holds a dead call
        assert not request.done()
        started = time.monotonic()
        stop = await asyncio.to_thread(podman, "stop", "--time", "30", container, timeout=60)
        took = time.monotonic() - started
        outcome: httpx.Response | BaseException
        try:
            outcome = await request
        except httpx.HTTPError as error:
            outcome = error
    assert stop.returncode == 0
    state = json.loads(podman("inspect", "--format", "{{json .State}}", container).stdout)
    return outcome, took, state


async def test_sigterm_lets_the_in_flight_request_finish_audited_and_exits_cleanly(stack: Stack) -> None:
    message_id = f"urn:uuid:{uuid.uuid4()}"
    response, took, state = await _stop_while_in_flight(stack, "stop-graceful", SECOND_PATIENT, message_id)
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 200
    assert body_of(parse_response(response)).find(f"{{{RIM}}}RegistryObjectList/{{{RIM}}}ExtrinsicObject") \
        is not None, response.text[:2000]
    # uvicorn handles SIGTERM as PID 1 and returns normally; 143 would be SIGTERM's default action, 137 a SIGKILL.
    assert state["ExitCode"] in (0, 143) and not state["OOMKilled"], state
    assert took < 10, f"stop took {took:.1f} s"
    log = logs(stack.container("stop-graceful"))
    for line in ("Shutting down", "Waiting for application shutdown", "xhuma_stopping",
                 "Application shutdown complete"):
        assert line in log, (line, log[-3000:])
    # The audit event of the request answered during the shutdown is in PostgreSQL.
    count = await _pg_value(stack.database_url, "SELECT count(*) FROM audit_event WHERE message_id = $1 AND "
                            "transaction = 'ITI-38'", message_id)
    assert count == 1


async def test_sigterm_stop_is_bounded_by_the_graceful_shutdown_timeout(stack: Stack) -> None:
    never_answered = fault_patient(Fault.GPC_TIMEOUT)  # GP Connect holds the call past any read timeout
    _response, took, state = await _stop_while_in_flight(stack, "stop-bounded", never_answered,
                                                         f"urn:uuid:{uuid.uuid4()}")
    assert state["ExitCode"] in (0, 143), state  # not 137: the stop did not need a SIGKILL
    assert STOP_BOUND_SECONDS - 1 < took < STOP_BOUND_SECONDS + 5, f"stop took {took:.1f} s"
    log = logs(stack.container("stop-bounded"))
    assert "timeout graceful shutdown exceeded" in log and "Application shutdown complete" in log, log[-3000:]



async def test_embedded_default_serves_on_a_read_only_root_and_its_audit_survives_the_stop(stack: Stack) -> None:
    """No configuration at all: the in-process simulator, memory cache and the SQLite audit file in the working
    directory, the only writable path besides /tmp. After SIGTERM the file holds every transaction's event."""
    async with httpx.AsyncClient(base_url=stack.url("embedded"), timeout=60) as client:
        exchange = await full_exchange(client)
    assert validate_bytes(exchange.ccd).valid
    podman("stop", "--time", "30", stack.container("embedded"), timeout=60)
    state = json.loads(podman("inspect", "--format", "{{json .State}}", stack.container("embedded")).stdout)
    assert state["ExitCode"] in (0, 143), state
    count_events = ("import sqlite3; db = sqlite3.connect('xhuma-audit.db'); "
                    "print(*db.execute('SELECT \"transaction\", message_id FROM audit_event ORDER BY id'), sep='\\n')")
    events = stack.run("embedded-audit", "-c", count_events, environment={}, detach=False, volume_of="embedded",
                       entrypoint="python3")
    for transaction, message_id in MESSAGE_IDS.items():
        assert repr((transaction, message_id)) in events, events

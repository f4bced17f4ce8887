"""A connection deadline that fires after the client's request has reached the server, but before the busy event
loop has read it, answers the request instead of closing the connection under it.

This was the lost exchange of the 400-exchange test (test_400_concurrent_exchanges_no_5xx_no_phi.py): the keep-alive
timer of a connection ran with the next request's 226 bytes already in the socket, unread, and closed it; with
unread bytes the close is a reset, so the EHR saw a connection reset (httpx.ReadError), not an answer. The
request-head deadline (slowloris) is a timer of the same loop and had the same fault. Closing stays the answer to a
connection with nothing waiting: idle, or slow to send its head.

The timer's moment is made exact here: on the server's event loop, the client's bytes are sent and seen to arrive,
then the deadline's callback runs, as it does when the loop is too busy to read before its timers. Served by
uvicorn with Xhuma's options and protocol classes (as `xhuma serve` runs them), over real sockets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from tests.support.servers import serve_with_server

from xhuma.config import Settings
from xhuma.security.tls import peer_bytes_unread, uvicorn_options

PROTOCOLS = pytest.mark.parametrize("protocol", [None, "xhuma.security.tls:XhumaH11Protocol"],
                                    ids=["httptools", "h11"])
REQUEST = b"GET /ok HTTP/1.1\r\nHost: xhuma.test\r\n\r\n"


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = (await receive())["type"]
            await send({"type": event + ".complete"})  # lifespan.startup / lifespan.shutdown
            if event == "lifespan.shutdown":
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@contextmanager
def server(tmp_path: Path, protocol: str | None, **overrides: Any) -> Iterator[tuple[int, uvicorn.Server]]:
    # Both deadlines far off: here they fire only when the test runs their callbacks.
    settings = Settings(working_dir=tmp_path, keepalive_timeout_seconds=300, header_timeout_seconds=300,
                        **overrides)
    options = uvicorn_options(settings)
    if protocol is not None:
        options["http"] = protocol
    with serve_with_server(ok_app, **options) as served:
        yield served


def the_connection(served: uvicorn.Server) -> Any:
    deadline = time.monotonic() + 5
    while len(served.server_state.connections) != 1:
        assert time.monotonic() < deadline, "the server did not accept the connection"
        time.sleep(0.01)
    return next(iter(served.server_state.connections))


def on_server_loop(protocol: Any, action: Callable[[], None]) -> None:
    """Run ``action`` on the server's event loop, in one callback: nothing else of the loop runs meanwhile."""
    done = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            action()
        except BaseException as error:
            failure.append(error)
        finally:
            done.set()

    protocol.loop.call_soon_threadsafe(run)
    assert done.wait(10), "the server's loop did not run the action"
    if failure:
        raise failure[0]


def send_and_see_it_arrive(client: socket.socket, protocol: Any, data: bytes) -> None:
    """Send ``data``; return once the server's socket holds all of it, unread (the loop is busy in this callback)."""
    client.sendall(data)
    deadline = time.monotonic() + 5
    while peer_bytes_unread(protocol.transport) < len(data):
        assert time.monotonic() < deadline, "the request did not reach the server's socket"
        time.sleep(0.005)


def answer(client: socket.socket) -> bytes:
    """One response (the test app's: 2 bytes of body), or what came before the server closed or reset."""
    received = b""
    try:
        while not (b"\r\n\r\n" in received and received.endswith(b"ok")):
            chunk = client.recv(65536)
            if not chunk:
                return received + b"<closed>"
            received += chunk
    except ConnectionResetError:
        return received + b"<reset>"
    return received


def closed(client: socket.socket) -> str:
    try:
        return "closed" if client.recv(65536) == b"" else "data"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "open"


def keep_alive_fires(protocol: Any) -> None:
    timer = protocol.timeout_keep_alive_task
    assert timer is not None, "no keep-alive timer armed after the first response"
    timer.cancel()
    protocol.timeout_keep_alive_handler()  # what the timer runs


def head_deadline_fires(protocol: Any) -> None:
    guard = protocol.head_guard
    assert guard.running, "no request-head deadline running"
    guard._timer.cancel()
    guard._timed_out()  # what the timer runs


@PROTOCOLS
def test_a_request_waiting_unread_when_the_keep_alive_timer_fires_is_answered(
    tmp_path: Path, protocol: str | None
) -> None:
    with server(tmp_path, protocol) as (port, served), socket.create_connection(("127.0.0.1", port), 5) as client:
        client.sendall(REQUEST)
        first = answer(client)
        connection = the_connection(served)

        def request_arrives_then_the_timer_fires() -> None:
            send_and_see_it_arrive(client, connection, REQUEST)
            keep_alive_fires(connection)

        on_server_loop(connection, request_arrives_then_the_timer_fires)
        second = answer(client)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert second.startswith(b"HTTP/1.1 200"), second  # before the fix: b"<reset>"


@PROTOCOLS
def test_an_idle_connection_is_still_closed_when_the_keep_alive_timer_fires(
    tmp_path: Path, protocol: str | None
) -> None:
    with server(tmp_path, protocol) as (port, served), socket.create_connection(("127.0.0.1", port), 5) as client:
        client.sendall(REQUEST)
        first = answer(client)
        connection = the_connection(served)
        on_server_loop(connection, lambda: keep_alive_fires(connection))
        state = closed(client)
    assert first.startswith(b"HTTP/1.1 200"), first
    assert state == "closed"


@PROTOCOLS
def test_a_request_head_waiting_unread_when_the_head_deadline_fires_is_answered(
    tmp_path: Path, protocol: str | None
) -> None:
    with server(tmp_path, protocol) as (port, served), socket.create_connection(("127.0.0.1", port), 5) as client:
        connection = the_connection(served)  # its head deadline runs from the opening

        def head_arrives_then_the_deadline_fires() -> None:
            send_and_see_it_arrive(client, connection, REQUEST)
            head_deadline_fires(connection)

        on_server_loop(connection, head_arrives_then_the_deadline_fires)
        response = answer(client)
    assert response.startswith(b"HTTP/1.1 200"), response  # before the fix: b"<reset>"


@PROTOCOLS
def test_a_head_still_incomplete_when_the_head_deadline_fires_is_closed(tmp_path: Path, protocol: str | None) -> None:
    """The slowloris case: what the client sent has been read, and the head is not complete."""
    with server(tmp_path, protocol) as (port, served), socket.create_connection(("127.0.0.1", port), 5) as client:
        connection = the_connection(served)
        client.sendall(REQUEST[:20])
        deadline = time.monotonic() + 5
        while peer_bytes_unread(connection.transport):  # read by the loop
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        on_server_loop(connection, lambda: head_deadline_fires(connection))
        state = closed(client)
    assert state in ("closed", "reset")

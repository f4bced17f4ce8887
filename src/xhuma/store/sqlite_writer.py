"""The SQLite audit writer: a small process of its own that commits each audit event in its own transaction.

Why a process: a writer thread in the gateway's process shares its GIL. Binding an INSERT's parameters, handing the
event over and waking the event loop again took the event loop about as long as the rest of a cached ITI-39
(docs/benchmarks.md). Here the event loop writes one frame to a pipe and later reads one acknowledgement byte.

Protocol, over the child's standard input and output:

* parent → child: frames of a 4-byte big-endian length and a ``marshal`` payload; the first frame is the INSERT
  statement, every later one an event: ``(deadline, parameters)``, the deadline in seconds since the epoch (or
  None) and the parameter tuple (str, int, float or None values only);
* child → parent: one byte per event, in order: ``0`` committed and on disk, ``1`` not.

Deadline: the child commits an event only if its deadline has not passed once the row is inserted (the check sits
right before COMMIT), so an event the gateway gave up waiting for (its caller was told it failed) cannot commit
later because the child or its disk was stalled (docs/decisions.md, "The audit trail is exact").

Durability: every event is its own transaction (an autocommit INSERT), and is acknowledged only once it is on
disk. The child takes all the events waiting in its pipe, commits them one by one into the write-ahead log, then
syncs the log once (``fsync``) and acknowledges them together: the group commit PostgreSQL makes of concurrent
transactions, and what lets a busy gateway commit thousands of events a second on a disk that syncs in 0.2 ms.
SQLite itself runs with ``synchronous=NORMAL``, which in WAL mode keeps the database consistent and still syncs the
log before each checkpoint; the explicit ``fsync`` before the acknowledgement adds the durability of each commit.

The child imports nothing from Xhuma and starts in isolated mode (``python -I -S``): it is running within tens of
milliseconds of the first event. It exits when its input closes (the gateway stopped, or died). It writes
nothing else anywhere, so no event value can reach a log.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import deque
from typing import Any, cast

PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000")
COMMITTED, FAILED = 0, 1


class WriterUnavailable(Exception):
    """The writer process could not take the event or did not acknowledge it (it exited)."""


class EventRefused(WriterUnavailable):
    """The writer acknowledged the event as not committed (its deadline passed, or SQLite failed)."""


def frame(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return len(payload).to_bytes(4, "big") + payload


class _WriterProtocol(asyncio.SubprocessProtocol):
    """Acknowledgements straight from the pipe: one byte per event, settling the oldest waiting future."""

    def __init__(self, pending: deque[asyncio.Future[None]]) -> None:
        self.pending = pending
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gone = False

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        pending = self.pending
        for code in data:
            future = pending.popleft()
            if future.done():
                continue
            if code == COMMITTED:
                future.set_result(None)
            else:
                future.set_exception(EventRefused("the audit event was not committed"))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:  # its output ended (after every acknowledgement it wrote): the process is gone
            self._gone()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def _gone(self) -> None:
        # Whatever the process had not acknowledged was not committed.
        self.gone = True
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(WriterUnavailable("the audit writer process exited"))


class SqliteWriter:
    """The gateway's side: starts the writer process on first use and awaits the acknowledgement of each event.

    The process belongs to the event loop that started it; a write from another loop (a test harness, a
    restarted application) starts a new one.
    """

    def __init__(self, path: str, sql: str, *, timeout_seconds: float | None = None) -> None:
        self._path = path
        self._sql = sql
        self._timeout = timeout_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _WriterProtocol | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._pending: deque[asyncio.Future[None]] = deque()
        self._starting: asyncio.Lock | None = None
        self._outgoing: list[bytes] = []
        # The waits that may still time out, oldest first, and the one timer set for the oldest (see _expire).
        self._expiries: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    async def write(self, params: tuple[Any, ...], deadline: float | None = None) -> None:
        """Commit one event, only until ``deadline`` (``time.time()`` seconds); ``EventRefused`` when it was not
        committed, ``WriterUnavailable`` when the process could not take it or exited, and ``TimeoutError`` when
        no acknowledgement came within ``timeout_seconds`` of the call (starting the process included)."""
        loop = asyncio.get_running_loop()
        expires = None if self._timeout is None else loop.time() + self._timeout
        if loop is not self._loop or self._protocol is None or self._protocol.gone:
            async with asyncio.timeout_at(expires):
                await self._running(loop)
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append(future)
        # The frames of one turn of the event loop go to the pipe in one write.
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(frame((deadline, params)))
        if expires is not None:
            self._expire_at(loop, expires, future)
        await future

    def _expire_at(self, loop: asyncio.AbstractEventLoop, expires: float, future: asyncio.Future[None]) -> None:
        """Fail ``future`` with TimeoutError at ``expires`` unless it is settled by then. Every wait has the same
        timeout, so expiry times grow in the order of the calls: one timer, set for the oldest unsettled wait,
        serves them all (a timer per event, as ``asyncio.timeout`` sets, cost a cached ITI-39 a noticeable share
        of its time)."""
        expiries = self._expiries
        while expiries and expiries[0][1].done():
            expiries.popleft()
        expiries.append((expires, future))
        if self._timer is None:
            self._timer = loop.call_at(expiries[0][0], self._expire)

    def _expire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        expiries = self._expiries
        while expiries:
            expires, future = expiries[0]
            if not future.done():
                if expires > now:
                    self._timer = loop.call_at(expires, self._expire)
                    return
                future.set_exception(TimeoutError("the audit writer did not acknowledge the event in time"))
            expiries.popleft()

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self._stdin is None or self._stdin.is_closing():
            return  # the process is gone: its protocol fails what it had not acknowledged
        self._stdin.write(data)

    async def _running(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._abandon()
            self._loop, self._starting = loop, asyncio.Lock()
        assert self._starting is not None
        async with self._starting:
            if self._protocol is None or self._protocol.gone:
                await self._start(loop)

    async def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = self._pending
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _WriterProtocol(pending), sys.executable, "-I", "-S", __file__, self._path,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
        except OSError as error:
            raise WriterUnavailable("the audit writer process could not be started") from error
        stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))  # (uvloop's is not a subclass)
        stdin.write(frame(self._sql))
        self._transport, self._protocol, self._stdin = transport, protocol, stdin

    def _abandon(self) -> None:
        """Forget a process started by another (perhaps closed) event loop: kill it and close its transport, which
        may fail halfway when that loop is closed (it is then marked closed, so nothing retries at collection)."""
        transport = self._transport
        if transport is not None:
            if transport.get_returncode() is None:
                try:
                    os.kill(transport.get_pid(), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                transport.close()
            except RuntimeError:  # "Event loop is closed"
                pass
        self._transport = self._protocol = self._stdin = None
        self._pending.clear()
        self._outgoing.clear()
        self._stop_expiring()

    def _stop_expiring(self) -> None:
        self._expiries.clear()
        if self._timer is not None:
            with contextlib.suppress(RuntimeError):  # a timer of a closed event loop
                self._timer.cancel()
            self._timer = None

    async def close(self) -> None:
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None or self._loop is not asyncio.get_running_loop():
            self._abandon()
            return
        if self._outgoing:
            self._flush()
        if self._stdin is not None:
            self._stdin.close()  # the child commits what it has, then sees the end of its input and exits
        try:
            await asyncio.wait_for(asyncio.shield(protocol.exited), timeout=10)
        except TimeoutError:
            transport.kill()
        transport.close()
        self._transport = self._protocol = self._stdin = None
        self._stop_expiring()


# --- the child process --------------------------------------------------------------------------------------------
def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)  # transactions are explicit: one per event
    for pragma in PRAGMAS:
        connection.execute(f"PRAGMA {pragma}")
    return connection


def _write_all(sink: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(sink, view):]


class _LogSync:
    """``fsync`` of the database's write-ahead log, and of its directory whenever the log file is a new one."""

    def __init__(self, path: str) -> None:
        self.log = path + "-wal"
        self.directory = os.path.dirname(os.path.abspath(path))
        self._synced_inode: int | None = None

    def __call__(self) -> None:
        descriptor = os.open(self.log, os.O_RDONLY)
        try:
            os.fsync(descriptor)
            inode = os.fstat(descriptor).st_ino
        finally:
            os.close(descriptor)
        if inode != self._synced_inode:
            directory = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
            self._synced_inode = inode


def serve(path: str, source: int = 0, sink: int = 1) -> None:
    """Commit the events read from ``source`` (frames), acknowledging each on ``sink``, until ``source`` ends."""
    buffer = bytearray()
    sql: str | None = None
    connection: sqlite3.Connection | None = None
    sync = _LogSync(path)
    while chunk := os.read(source, 1 << 20):
        buffer += chunk
        outcomes = bytearray()
        offset = 0
        while len(buffer) - offset >= 4:
            size = int.from_bytes(buffer[offset : offset + 4], "big")
            if len(buffer) - offset - 4 < size:
                break
            item = marshal.loads(buffer[offset + 4 : offset + 4 + size])  # noqa: S302 - only from our parent
            offset += 4 + size
            if sql is None:
                sql = item
                continue
            deadline, params = item
            try:
                if connection is None:
                    connection = _connect(path)
                connection.execute("BEGIN IMMEDIATE")  # this event is its own transaction
                connection.execute(sql, params)
                if deadline is not None and time.time() > deadline:
                    connection.execute("ROLLBACK")  # its caller has been told it failed: it must not commit
                    outcomes.append(FAILED)
                    continue
                connection.execute("COMMIT")
                outcomes.append(COMMITTED)
            except (sqlite3.Error, OSError, ValueError, TypeError):
                outcomes.append(FAILED)
                if connection is not None:
                    connection.close()
                    connection = None  # reconnect for the next event (the file may be back)
        del buffer[:offset]
        if COMMITTED in outcomes:
            try:
                sync()  # every commit above is on disk once this returns
            except OSError:
                outcomes = bytearray(FAILED for _ in outcomes)  # not known to be durable: not acknowledged
        if outcomes:
            _write_all(sink, bytes(outcomes))
    if connection is not None:
        connection.close()


if __name__ == "__main__":
    serve(sys.argv[1])

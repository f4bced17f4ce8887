"""The SQLite audit writer: a small process of its own that commits each audit event in its own transaction.

Why a process: a writer thread in the gateway's process shares its GIL. Binding an INSERT's parameters, handing the
event over and waking the event loop again took the event loop about as long as the rest of a cached ITI-39
(docs/benchmarks.md). Here the event loop writes one frame to a pipe and later reads one acknowledgement byte.

Protocol, over the child's standard input and output:

* parent → child: frames of a 4-byte big-endian length and a ``marshal`` payload; the first frame is the INSERT
  statement, every later one the parameter tuple of one event (str, int, float or None values only);
* child → parent: one byte per event, in order: ``0`` committed and on disk, ``1`` not.

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
import marshal
import os
import sqlite3
import sys
from collections import deque
from typing import Any

PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000")
COMMITTED, FAILED = 0, 1


class WriterUnavailable(Exception):
    """The writer process could not take the event or did not acknowledge it (it exited)."""


def frame(value: Any) -> bytes:
    payload = marshal.dumps(value)
    return len(payload).to_bytes(4, "big") + payload


class SqliteWriter:
    """The gateway's side: starts the writer process on first use and awaits the acknowledgement of each event.

    The process belongs to the event loop that started it; a write from another loop (a test harness, a
    restarted application) starts a new one.
    """

    def __init__(self, path: str, sql: str) -> None:
        self._path = path
        self._sql = sql
        self._process: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[asyncio.Future[None]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._outgoing: list[bytes] = []

    async def write(self, params: tuple[Any, ...]) -> None:
        """Commit one event; ``WriterUnavailable`` when it was not committed."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._reader is None or self._reader.done():
            await self._running(loop)
        future: asyncio.Future[None] = loop.create_future()
        self._pending.append(future)
        # The frames of one turn of the event loop go to the pipe in one write.
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(frame(params))
        await future

    def _flush(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        process = self._process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return  # the process is gone: the reader fails what it had not acknowledged
        process.stdin.write(data)

    async def _running(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            self._abandon()
            self._loop, self._starting = loop, asyncio.Lock()
        assert self._starting is not None
        async with self._starting:
            if self._reader is None or self._reader.done():
                await self._start()

    async def _start(self) -> None:
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-I", "-S", __file__, self._path,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )
        except OSError as error:
            raise WriterUnavailable("the audit writer process could not be started") from error
        assert process.stdin is not None
        process.stdin.write(frame(self._sql))
        self._process = process
        self._reader = asyncio.get_running_loop().create_task(self._acknowledgements(process))

    async def _acknowledgements(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        try:
            while data := await process.stdout.read(65536):
                for code in data:
                    future = self._pending.popleft()
                    if future.done():
                        continue
                    if code == COMMITTED:
                        future.set_result(None)
                    else:
                        future.set_exception(WriterUnavailable("the audit event was not committed"))
        finally:
            # The process is gone (or this task was cancelled): whatever it had not acknowledged was not committed.
            self._fail_pending()
            if process.returncode is None:
                process.kill()

    def _fail_pending(self) -> None:
        while self._pending:
            future = self._pending.popleft()
            if not future.done():
                future.set_exception(WriterUnavailable("the audit writer process exited"))

    def _abandon(self) -> None:
        """Forget a process started by another (perhaps closed) event loop."""
        if self._process is not None and self._process.returncode is None:
            try:
                os.kill(self._process.pid, 9)
            except ProcessLookupError:
                pass
        self._process, self._reader = None, None
        self._pending.clear()
        self._outgoing.clear()

    async def close(self) -> None:
        process, reader = self._process, self._reader
        if process is None or self._loop is not asyncio.get_running_loop():
            self._abandon()
            return
        assert process.stdin is not None
        if self._outgoing:
            self._flush()
        process.stdin.close()  # the child commits what it has, then sees the end of its input and exits
        try:
            await asyncio.wait_for(process.wait(), timeout=10)
        except TimeoutError:
            process.kill()
        if reader is not None:
            await asyncio.gather(reader, return_exceptions=True)
        self._process, self._reader = None, None


# --- the child process --------------------------------------------------------------------------------------------
def _connect(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)  # autocommit: each INSERT is its own transaction
    for pragma in PRAGMAS:
        connection.execute(f"PRAGMA {pragma}")
    return connection


def _write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view):]


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


def serve(path: str) -> None:
    buffer = bytearray()
    sql: str | None = None
    connection: sqlite3.Connection | None = None
    sync = _LogSync(path)
    while chunk := os.read(0, 1 << 20):
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
            try:
                if connection is None:
                    connection = _connect(path)
                connection.execute(sql, item)  # autocommit: this event is its own transaction
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
            _write_all(bytes(outcomes))
    if connection is not None:
        connection.close()


if __name__ == "__main__":
    serve(sys.argv[1])

"""The SQLite audit writer process (xhuma.store.sqlite_writer): every event committed on its own and acknowledged
in order, no acknowledgement for what was not committed, and a lost process never taken for a committed event.

Run under both event loops the gateway may use: asyncio's own and uvloop (what ``xhuma serve`` runs on).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop

from xhuma.store.sqlite_writer import SqliteWriter, WriterUnavailable

SQL = "INSERT INTO event (n, label) VALUES (?, ?)"


def _database(path: Path) -> str:
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE event (n INTEGER NOT NULL, label TEXT)")
    connection.commit()
    connection.close()
    return str(path)


def _rows(path: str) -> list[tuple[int, str | None]]:
    connection = sqlite3.connect(path)
    try:
        return connection.execute("SELECT n, label FROM event ORDER BY rowid").fetchall()
    finally:
        connection.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[None]]], None]:
    def runner(main: Callable[[], Awaitable[None]]) -> None:
        if request.param == "uvloop":
            uvloop.run(main())
        else:
            asyncio.run(main())

    return runner


def test_concurrent_events_are_each_committed_and_acknowledged(tmp_path: Path, run) -> None:
    path = _database(tmp_path / "audit.db")

    async def main() -> None:
        writer = SqliteWriter(path, SQL)
        await asyncio.gather(*(writer.write((n, f"event {n}")) for n in range(200)))
        await writer.close()

    run(main)
    rows = _rows(path)
    assert sorted(rows) == [(n, f"event {n}") for n in range(200)]


def test_an_event_the_database_refuses_is_not_acknowledged_and_the_next_one_is(tmp_path: Path, run) -> None:
    path = _database(tmp_path / "audit.db")

    async def main() -> None:
        writer = SqliteWriter(path, SQL)
        with pytest.raises(WriterUnavailable):
            await writer.write((None, "violates NOT NULL"))
        await writer.write((7, "fine"))
        await writer.close()

    run(main)
    assert _rows(path) == [(7, "fine")]


def test_a_database_that_cannot_be_opened_fails_every_event(tmp_path: Path, run) -> None:
    async def main() -> None:
        writer = SqliteWriter(str(tmp_path / "missing-directory" / "audit.db"), SQL)
        for n in range(3):
            with pytest.raises(WriterUnavailable):
                await writer.write((n, "x"))
        await writer.close()

    run(main)


def test_a_killed_writer_fails_what_it_had_not_acknowledged_and_is_restarted(tmp_path: Path, run) -> None:
    path = _database(tmp_path / "audit.db")

    async def main() -> None:
        writer = SqliteWriter(path, SQL)
        await writer.write((1, "before"))
        assert writer._transport is not None
        os.kill(writer._transport.get_pid(), signal.SIGKILL)
        # The event loop learns of the death from the closed pipe, after this event was sent: never acknowledged.
        with pytest.raises(WriterUnavailable):
            await writer.write((2, "while dying"))
        await writer.write((3, "after"))  # a new process
        await writer.close()

    run(main)
    assert _rows(path) == [(1, "before"), (3, "after")]


def test_each_wait_on_a_stalled_writer_times_out_on_its_own_and_later_events_are_matched_to_their_own_answers(
    tmp_path: Path, run
) -> None:
    """One timer serves every event in flight (their timeouts expire in the order they were written): with the
    process stopped, each wait ends with TimeoutError at its own timeout, not earlier, not all at once at the
    first one's; once it resumes, the late answers settle nothing, and the next event waits for its own."""
    path = _database(tmp_path / "audit.db")
    timeout = 1.0

    async def main() -> None:
        writer = SqliteWriter(path, SQL, timeout_seconds=timeout)
        await writer.write((1, "before"))
        assert writer._transport is not None
        pid = writer._transport.get_pid()
        loop = asyncio.get_running_loop()
        os.kill(pid, signal.SIGSTOP)
        try:
            async def stalled(n: int, delay: float) -> float:
                await asyncio.sleep(delay)
                started = loop.time()
                with pytest.raises(TimeoutError):
                    # Its deadline passes while the process is stopped: it must not commit after the resume.
                    await writer.write((n, "stalled"), deadline=time.time() + timeout)
                return loop.time() - started

            waited = await asyncio.wait_for(asyncio.gather(stalled(2, 0), stalled(3, 0.3), stalled(4, 0.6)), 10)
        finally:
            os.kill(pid, signal.SIGCONT)
        for seconds in waited:
            assert timeout - 0.02 <= seconds < timeout + 0.5
        await writer.write((5, "after"))
        await writer.close()

    run(main)
    assert _rows(path) == [(1, "before"), (5, "after")]


def test_events_written_just_before_close_are_committed(tmp_path: Path, run) -> None:
    path = _database(tmp_path / "audit.db")

    async def main() -> None:
        writer = SqliteWriter(path, SQL)
        tasks = [asyncio.ensure_future(writer.write((n, None))) for n in range(20)]
        await asyncio.sleep(0)  # queued, perhaps not yet sent
        await writer.write((99, "last"))
        await writer.close()
        await asyncio.gather(*tasks)

    run(main)
    assert len(_rows(path)) == 21


def test_a_writer_used_from_a_new_event_loop_starts_its_own_process(tmp_path: Path) -> None:
    path = _database(tmp_path / "audit.db")
    writer = SqliteWriter(path, SQL)
    asyncio.run(writer.write((1, "first loop")))  # this loop closes with the process still running
    asyncio.run(writer.write((2, "second loop")))

    async def close() -> None:
        await writer.close()

    asyncio.run(close())
    assert _rows(path) == [(1, "first loop"), (2, "second loop")]


def test_events_are_acknowledged_only_after_the_write_ahead_log_is_synced(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """No disclosure without audit: each event is its own transaction (SQLite in WAL, synchronous=NORMAL, so a
    commit is not yet durable), and its acknowledgement goes out only after an fsync of the log that holds it."""
    import threading

    from xhuma.store import sqlite_writer

    path = _database(tmp_path / "audit.db")
    journal: list[str] = []
    real_fsync, real_write = os.fsync, os.write
    log_inodes: set[int] = set()

    def fsync(descriptor: int) -> None:
        if os.path.exists(path + "-wal") and os.fstat(descriptor).st_ino == os.stat(path + "-wal").st_ino:
            log_inodes.add(os.fstat(descriptor).st_ino)
            journal.append(f"sync log, {len(_rows(path))} rows committed")
        real_fsync(descriptor)

    inbound_read, inbound_write = os.pipe()
    outbound_read, outbound_write = os.pipe()

    def write(descriptor: int, data: bytes) -> int:
        if descriptor == outbound_write:
            journal.append(f"acknowledge {len(data)}")
        return real_write(descriptor, data)

    monkeypatch.setattr(sqlite_writer.os, "fsync", fsync)
    monkeypatch.setattr(sqlite_writer.os, "write", write)
    child = threading.Thread(target=sqlite_writer.serve, args=(path, inbound_read, outbound_write))
    child.start()
    frames = b"".join(sqlite_writer.frame((None, (n, "x"))) for n in range(5))
    real_write(inbound_write, sqlite_writer.frame(SQL) + frames)
    acknowledged = b""
    while len(acknowledged) < 5:
        acknowledged += os.read(outbound_read, 16)
    os.close(inbound_write)
    child.join(timeout=10)
    assert acknowledged == bytes(5)  # five events, each committed
    assert journal == ["sync log, 5 rows committed", "acknowledge 5"]
    assert log_inodes


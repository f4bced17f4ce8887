"""Per-message identifiers (xhuma.ids): RFC 9562 version-4 UUIDs and 128-bit hex ids, unique, and not repeated by
a forked worker (uvicorn --workers, or any fork) that starts from the same generator state."""

from __future__ import annotations

import os
import uuid

from xhuma import ids


def test_uuid4_is_a_canonical_version_4_rfc_variant_uuid() -> None:
    for _ in range(2000):
        text = ids.uuid4()
        value = uuid.UUID(text)
        assert str(value) == text and value.version == 4 and value.variant == uuid.RFC_4122


def test_ids_do_not_repeat() -> None:
    minted = [ids.uuid4() for _ in range(20000)] + [ids.random_hex() for _ in range(20000)]
    assert len(set(minted)) == len(minted)
    assert all(len(value) == 32 and int(value, 16) >= 0 for value in minted[20000:])


def test_a_forked_process_mints_other_ids_than_its_parent() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.close(read)
        os.write(write, " ".join(ids.random_hex() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    parent = [ids.random_hex() for _ in range(4)]
    child = os.read(read, 4096).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 4 and not set(child) & set(parent)

"""Identifiers minted for each message: unique, never secret (WS-Addressing MessageIDs, request ids, MIME
boundaries and Content-IDs).

``os.urandom`` costs a system call per id, and an ITI-39 answer mints five; these come from a generator seeded
from it once per process (and again in a forked child), 128 random bits each, so a collision is as unlikely as
between two ``uuid.uuid4()``. Whatever must be unpredictable (keys, nonces, JWT ids) keeps using ``os.urandom``
or ``secrets``.
"""

from __future__ import annotations

import os
import random

_generator = random.Random()  # seeded from os.urandom
os.register_at_fork(after_in_child=_generator.seed)


def random_hex() -> str:
    """128 random bits as 32 lower-case hex digits."""
    return f"{_generator.getrandbits(128):032x}"


def uuid4() -> str:
    """A random (version 4, RFC 9562 variant) UUID in its canonical text form."""
    value = _generator.getrandbits(128) & ~(0xF000 << 64) | (0x4000 << 64)
    value = value & ~(0xC000 << 48) | (0x8000 << 48)
    digits = f"{value:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

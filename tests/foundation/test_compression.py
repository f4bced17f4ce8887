"""The gzip policy of answers (xhuma.compression): what is worth compressing, and that it round-trips."""

from __future__ import annotations

import gzip
import os

from xhuma.compression import THREAD_MIN_BYTES, GzipPolicy
from xhuma.config import Settings

XML = b"<doc>" + b"".join(b'<entry code="%d">Asthma</entry>' % n for n in range(400)) + b"</doc>"


async def test_an_answer_from_the_threshold_up_is_compressed_and_round_trips() -> None:
    policy = GzipPolicy(level=6, min_bytes=1400)
    compressed = await policy.encode(XML)
    assert compressed is not None and gzip.decompress(compressed) == XML
    assert compressed == await policy.encode(XML)  # no timestamp: the same answer, the same bytes
    assert await policy.encode(XML[:1399]) is None


async def test_an_answer_that_does_not_shrink_is_sent_as_it_is() -> None:
    assert await GzipPolicy(level=9, min_bytes=0).encode(os.urandom(4096)) is None


async def test_a_large_answer_is_compressed_off_the_event_loop_to_the_same_bytes() -> None:
    large = XML * (THREAD_MIN_BYTES // len(XML) + 1)
    policy = GzipPolicy(level=1, min_bytes=1400)
    compressed = await policy.encode(large)
    assert compressed == policy.compress(large) and gzip.decompress(compressed) == large


async def test_level_0_never_compresses() -> None:
    policy = GzipPolicy.from_settings(Settings(gzip_level=0))
    assert not policy.enabled and await policy.encode(XML) is None

"""A lease renewal that loses its cancellation (redis-py 8.2 lets some cancellations that land inside a command go
unreported: the command returns normally) must neither hold the ITI-38 answer nor keep the patient's lease."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from tests.replicas.test_single_flight import find_documents
from tests.support.exchange import NHS_NUMBER, app_client

from xhuma.app import create_app
from xhuma.store.lease import MemoryLeases


class CancellationLosingLeases(MemoryLeases):
    """Leases whose renewal waits (a command in flight) until it is cancelled, then loses the cancellation and
    renews, as a Redis command cancelled at the wrong moment does."""

    def __init__(self) -> None:
        super().__init__()
        self.renewals = 0

    async def renew(self, name: str, token: str, ttl_ms: int) -> bool:
        self.renewals += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        return await super().renew(name, token, ttl_ms)


async def test_a_renewal_that_loses_its_cancellation_neither_holds_the_answer_nor_keeps_the_lease(
    make_settings: Callable[..., Any],
) -> None:
    # Lease of 2 s: the first renewal starts after 0.67 s, while GP Connect (1.5 s) is still answering, and is in
    # flight when the pipeline ends.
    app = create_app(make_settings(pipeline_lease_seconds=2, simulator_gpc_latency_ms=1500))
    async with app_client(app) as client:
        leases = CancellationLosingLeases()
        app.state.runtime.leases = leases
        query = asyncio.create_task(find_documents(client))
        done, _ = await asyncio.wait({query}, timeout=30)  # a liveness bound, not a speed figure
        if not done:  # without the fix the renewal renews for ever and the answer never comes
            query.cancel()
        assert query in done, "the ITI-38 answer waited for a renewal that never ended"
        assert len(query.result()) == 1
        assert leases.renewals == 1  # the renewal in flight at the end was the last
        lease = app.state.runtime.keys.pipeline_lease(NHS_NUMBER)
        assert await leases.acquire(lease, 1000) is not None  # given back, not kept alive

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from tests.ihe.support import Harness, make_harness

from xhuma.config import Settings


@pytest.fixture
async def harness_factory(
    make_settings: Callable[..., Settings], sqlite_database_url: str
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []

    async def factory(settings: Settings | None = None, **kwargs: Any) -> Harness:
        harness = await make_harness(settings or make_settings(), database_url=sqlite_database_url, **kwargs)
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        await harness.records.aclose()
        await harness.client.aclose()
        await harness.audit.close()


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> Harness:
    return await harness_factory()

"""SDS client against the simulator (SPEC §6; LESSONS 14)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from xhuma.errors import AmbiguousEndpoint, NoEndpoint, UpstreamUnauthorised
from xhuma.nhs.simulator.patients import AMBIGUOUS_PRACTICE, NO_ENDPOINT_PRACTICE
from xhuma.nhs.simulator.records import provider_root, synthetic_asid, synthetic_party_key
from xhuma.store.cache import RedisCache, ResilientCache

from .conftest import Nhs


async def test_sds_device_then_endpoint_gives_asid_party_key_and_fhir_root(nhs: Nhs) -> None:
    route = await nhs.sds.gp_connect_route("b82617")
    assert route.ods_code == "B82617"
    assert route.asid == synthetic_asid("B82617")
    assert route.party_key == synthetic_party_key("B82617")
    assert route.endpoint_url == provider_root("B82617")
    assert nhs.state.requests["sds-device"] == 1 and nhs.state.requests["sds-endpoint"] == 1


@pytest.mark.redis
async def test_second_sds_lookup_is_a_cache_hit_in_real_redis_lesson_14(
    make_nhs: Callable[..., Nhs], redis_url: str, redis_namespace: str
) -> None:
    cache = ResilientCache(RedisCache(redis_url, namespace=redis_namespace), name="redis")
    nhs = make_nhs(cache=cache)
    first = await nhs.sds.gp_connect_route("B82617")
    second = await make_nhs(cache=cache).sds.gp_connect_route("B82617")  # another replica, same Redis
    assert first == second
    assert nhs.state.requests["sds-device"] == 1
    assert await cache.get("sds:B82617:gpc-structured") is not None
    assert nhs.metrics.cache_lookups.labels(kind="sds", result="miss")._value.get() == 1
    await cache.close()


async def test_a_cache_failure_never_fails_the_sds_request(make_nhs: Callable[..., Nhs]) -> None:
    dead = ResilientCache(RedisCache("redis://127.0.0.1:1/0", timeout_seconds=0.2), name="redis")
    nhs = make_nhs(cache=dead)
    route = await nhs.sds.gp_connect_route("B82617")
    assert route.asid == synthetic_asid("B82617")
    assert dead.last_error is not None
    await dead.close()


async def test_practice_without_endpoint_is_NoEndpoint(nhs: Nhs) -> None:
    with pytest.raises(NoEndpoint):
        await nhs.sds.gp_connect_route(NO_ENDPOINT_PRACTICE)


async def test_practice_with_several_endpoints_is_AmbiguousEndpoint(nhs: Nhs) -> None:
    with pytest.raises(AmbiguousEndpoint):
        await nhs.sds.gp_connect_route(AMBIGUOUS_PRACTICE)


async def test_sds_without_apikey_is_unauthorised(
    make_nhs: Callable[..., Nhs], nhs_settings: Callable[..., object]
) -> None:
    nhs = make_nhs(settings=nhs_settings(sds_api_key=None))
    with pytest.raises(UpstreamUnauthorised):
        await nhs.sds.gp_connect_route("B82617")


async def test_sds_retry_fails_twice_then_succeeds(nhs: Nhs) -> None:
    nhs.state.inject("sds", 503, 502)
    route = await nhs.sds.gp_connect_route("B82617")
    assert route.ods_code == "B82617"
    assert nhs.state.requests["sds-device"] == 3

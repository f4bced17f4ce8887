"""Audit pseudonyms and the PDS token are the same across replicas (issue 17): the pseudonym comes from the shared
XHUMA_AUDIT_HMAC_KEY, the PDS access token from the shared cache (one token request for the deployment)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import sqlalchemy as sa
from tests.support.exchange import NHS_NUMBER
from tests.support.soap import ACTION_55, NHS_OID, SOAP_CT, envelope, iti55_body

from xhuma.audit import pseudonymise
from xhuma.store.audit import audit_event

from .conftest import AUDIT_HMAC_KEY

OTHER_PATIENT = "9690937278"  # a second patient of the simulator's data


async def discover(client: httpx.AsyncClient, nhs_number: str) -> str:
    """ITI-55 for ``nhs_number``; the request id of its audit event."""
    response = await client.post("/SOAP/iti55", content=envelope(ACTION_55, iti55_body([[(NHS_OID, nhs_number)]])),
                                 headers={"content-type": SOAP_CT})
    assert response.status_code == 200, response.text[:2000]
    return response.headers["x-request-id"]


async def test_two_replicas_record_one_patient_under_the_same_pseudonym(deployment: Callable[..., Any]) -> None:
    async with deployment(replicas=2) as replicas:
        request_ids = [await discover(client, NHS_NUMBER) for client in replicas.clients]
        async with replicas.apps[0].state.runtime.audit.engine.connect() as connection:
            rows = (await connection.execute(
                sa.select(audit_event.c.request_id, audit_event.c.patient_pseudonym)
                .where(audit_event.c.transaction == "ITI-55", audit_event.c.request_id.in_(request_ids))
            )).all()
    assert sorted(row.request_id for row in rows) == sorted(request_ids)  # one event from each replica
    assert {row.patient_pseudonym for row in rows} == {pseudonymise(NHS_NUMBER, AUDIT_HMAC_KEY.encode())}


async def test_two_replicas_use_one_pds_token(deployment: Callable[..., Any]) -> None:
    async with deployment(replicas=2) as replicas:
        await discover(replicas.clients[0], NHS_NUMBER)
        await discover(replicas.clients[1], OTHER_PATIENT)  # another patient: replica B must call PDS itself
        assert replicas.simulator.requests["pds"] == 2
        assert replicas.simulator.requests["token"] == 1

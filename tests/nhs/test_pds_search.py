"""PDS demographic search against the simulator over real HTTP (PDS FHIR API, search-patient; docs/ihe.md)."""

from __future__ import annotations

import dataclasses

import pytest

from xhuma.errors import UpstreamRejectedRequest, UpstreamUnavailable
from xhuma.nhs.pds import search_parameters
from xhuma.nhs.simulator.patients import SEARCH_PATIENTS, Fault, SearchCase, fault_patient
from xhuma.nhs.simulator.pds_search import soundex
from xhuma.ports import PdsSearchQuery

from .conftest import Nhs

UNIQUE = SEARCH_PATIENTS[SearchCase.UNIQUE][0]
PAIR = SEARCH_PATIENTS[SearchCase.PAIR]
TRIPLETS = SEARCH_PATIENTS[SearchCase.TOO_MANY]
MOVED = SEARCH_PATIENTS[SearchCase.MOVED][0]


def query(patient, **overrides) -> PdsSearchQuery:
    values = {"family": patient.family, "birth_date": patient.birth_date, "given": patient.given,
              "gender": patient.gender, "postcode": patient.postcode}
    values.update(overrides)
    return PdsSearchQuery(**values)


async def test_pds_search_finds_a_unique_match_scored_1_with_the_application_restricted_parameters(nhs: Nhs) -> None:
    result = await nhs.pds.search_patients(query(UNIQUE))
    assert not result.too_many and len(result.matches) == 1
    match = result.matches[0]
    assert match.patient.nhs_number == UNIQUE.nhs_number and match.score == 1.0
    assert not match.patient.superseded and match.patient.gp_ods_code
    names = [name for name, _ in search_parameters(query(UNIQUE))]
    assert ("_max-results", "1") in search_parameters(query(UNIQUE)) and "_history" in names
    assert nhs.state.requests["pds-search"] == 1


async def test_pds_search_of_a_pair_sharing_family_name_and_birth_date_is_too_many_matches(nhs: Nhs) -> None:
    result = await nhs.pds.search_patients(query(PAIR[0], given=None, gender=None, postcode=None))
    assert result.too_many and result.matches == ()
    # The given name tells them apart.
    result = await nhs.pds.search_patients(query(PAIR[1], gender=None, postcode=None))
    assert [m.patient.nhs_number for m in result.matches] == [PAIR[1].nhs_number]


async def test_pds_search_of_triplets_is_too_many_matches_until_the_telephone_number_is_sent(nhs: Nhs) -> None:
    assert (await nhs.pds.search_patients(query(TRIPLETS[0]))).too_many
    result = await nhs.pds.search_patients(query(TRIPLETS[2], phone=TRIPLETS[2].phone))
    assert [m.patient.nhs_number for m in result.matches] == [TRIPLETS[2].nhs_number]


async def test_pds_search_by_a_previous_postcode_is_a_partial_match_scored_below_1(nhs: Nhs) -> None:
    result = await nhs.pds.search_patients(query(MOVED, postcode=MOVED.previous_postcode))
    assert len(result.matches) == 1 and 0 < result.matches[0].score < 1
    # Without history the previous address is not searched.
    result = await nhs.pds.search_patients(query(MOVED, postcode=MOVED.previous_postcode, mode="exact"))
    assert result.matches == ()


async def test_pds_search_never_returns_a_restricted_patient_by_postcode_and_strips_it_otherwise(nhs: Nhs) -> None:
    restricted = dict(family="XHUMA-RESTRICTED", birth_date="1980-01-01", given="Rachel")
    assert (await nhs.pds.search_patients(PdsSearchQuery(**restricted, postcode="LS1 4AP"))).matches == ()
    result = await nhs.pds.search_patients(PdsSearchQuery(**restricted))
    patient = result.matches[0].patient
    assert patient.nhs_number == fault_patient(Fault.RESTRICTED) and patient.restricted
    assert patient.addresses == () and patient.gp_ods_code is None


async def test_pds_search_fuzzy_mode_matches_a_sound_alike_family_name_below_1(nhs: Nhs) -> None:
    assert soundex("XHUMA-SEARCH") == soundex("XHUMASERCH")
    result = await nhs.pds.search_patients(dataclasses.replace(query(UNIQUE), family="XHUMASERCH", mode="fuzzy"))
    assert [m.patient.nhs_number for m in result.matches] == [UNIQUE.nhs_number]
    assert result.matches[0].score < 1
    assert (await nhs.pds.search_patients(dataclasses.replace(query(UNIQUE), family="XHUMASERCH"))).matches == ()


async def test_pds_search_with_no_match_is_an_empty_result_not_an_error(nhs: Nhs) -> None:
    result = await nhs.pds.search_patients(query(UNIQUE, birth_date="1975-03-15"))
    assert result.matches == () and not result.too_many


async def test_pds_search_unavailable_is_an_upstream_error_never_an_empty_result(nhs: Nhs) -> None:
    nhs.state.inject("pds", 503, 503, 503)
    with pytest.raises(UpstreamUnavailable):
        await nhs.pds.search_patients(query(UNIQUE))


async def test_pds_search_rejected_by_pds_is_our_error_not_no_match(nhs: Nhs) -> None:
    with pytest.raises(UpstreamRejectedRequest):
        await nhs.pds.search_patients(query(UNIQUE, birth_date="1975-3-14"))


async def test_pds_search_is_audited_with_counts_and_scores_but_no_demographics(nhs: Nhs) -> None:
    await nhs.pds.search_patients(query(UNIQUE))
    event = nhs.sink.events[-1]
    assert event.transaction == "PDS" and event.outcome == "success"
    assert event.details["operation"] == "search" and event.details["matches"] == 1
    assert event.details["scores"] == [1.0]
    flat = repr(event)
    for value in (UNIQUE.family, UNIQUE.given, UNIQUE.birth_date, UNIQUE.postcode, UNIQUE.nhs_number):
        assert value not in flat

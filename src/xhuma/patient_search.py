"""ITI-55 discovery by demographics: a PDS search when the query carries no NHS number (docs/ihe.md).

A match needs PDS's single candidate, scored at or above ``pds_search_min_score``; several candidates or a low
score are answered "no match" with the XCPD attributes that would single the patient out (ITI TF-2 3.55.4.2.3
case 4), never a guess. Whether the candidate may be disclosed and whether its demographics agree with the query
is the use case's decision (``Records.discover_by_demographics``). Nothing here logs demographics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xhuma.config import Settings
from xhuma.errors import MoreDemographicsNeeded, PatientNotFound
from xhuma.ports import PdsClient, PdsPatient, PdsSearchQuery

if TYPE_CHECKING:
    from xhuma.records import DemographicQuery

# XCPD "more attributes requested" codes, code system 1.3.6.1.4.1.19376.1.2.27.1 (ITI TF-2 3.55.4.2.2.6)
GENDER_REQUESTED = "LivingSubjectAdministrativeGenderRequested"
ADDRESS_REQUESTED = "PatientAddressRequested"
TELECOM_REQUESTED = "PatientTelecomRequested"

_FHIR_GENDER = {"M": "male", "F": "female"}  # UN (undifferentiated) is not searched: PDS holds other | unknown


def search_query(demographics: DemographicQuery, mode: str) -> PdsSearchQuery | None:
    """The PDS search for the query's demographics, or None when it lacks what PDS needs at least: the family name
    and a full birth date (PDS FHIR API: minimum parameters of a non-fuzzy search)."""
    birth = demographics.birth_date or ""
    if not demographics.family or len(birth) != 8 or not birth.isdigit():
        return None
    phone = next((value[4:] for value in demographics.telecom if value.lower().startswith("tel:")), None)
    email = next((value[7:] for value in demographics.telecom if value.lower().startswith("mailto:")), None)
    return PdsSearchQuery(
        family=demographics.family,
        birth_date=f"{birth[:4]}-{birth[4:6]}-{birth[6:]}",
        given=demographics.given[0] if demographics.given else None,
        gender=_FHIR_GENDER.get(demographics.gender or ""),
        postcode=demographics.postcode,
        phone=phone,
        email=email,
        mode=mode,
    )


def requested_attributes(demographics: DemographicQuery) -> tuple[str, ...]:
    """What the query did not send among the attributes the PDS search can use to tell candidates apart."""
    requested = []
    if _FHIR_GENDER.get(demographics.gender or "") is None:
        requested.append(GENDER_REQUESTED)
    if not demographics.postcode:
        requested.append(ADDRESS_REQUESTED)
    if not demographics.telecom:
        requested.append(TELECOM_REQUESTED)
    return tuple(requested)


async def find_candidate(pds: PdsClient, demographics: DemographicQuery, settings: Settings) -> PdsPatient:
    """PDS's one sure candidate for the demographics; PatientNotFound or MoreDemographicsNeeded otherwise. PDS
    errors propagate (UpstreamError: our trouble, answered AE, never "no match")."""
    if not settings.pds_demographic_search:
        raise PatientNotFound(detail="NoNhsNumber")
    query = search_query(demographics, settings.pds_search_mode)
    if query is None:
        raise PatientNotFound(detail="DemographicsMissing")
    result = await pds.search_patients(query)
    if result.too_many or len(result.matches) > 1:
        raise MoreDemographicsNeeded(
            requested=requested_attributes(demographics),
            detail="TooManyMatches" if result.too_many else "SeveralCandidates",
        )
    if not result.matches:
        raise PatientNotFound(detail="NoDemographicMatch")
    match = result.matches[0]
    if match.score < settings.pds_search_min_score:
        raise MoreDemographicsNeeded(requested=requested_attributes(demographics), detail="LowScore")
    return match.patient


__all__ = [
    "ADDRESS_REQUESTED",
    "GENDER_REQUESTED",
    "TELECOM_REQUESTED",
    "find_candidate",
    "requested_attributes",
    "search_query",
]

"""Conversion context (what the caller decides) and the Conversion result (what the IHE layer needs)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from xhuma.ccda import templates as T


class ProductCoding(StrEnum):
    """SPEC §10.1: how dm+d/SNOMED product codes meet the US RxNorm/CVX value sets.

    ``primary``: SNOMED as the primary code (what UK-aware receivers read; US value-set checks only warn).
    ``translation``: ``code nullFlavor="OTH"`` with the SNOMED code as a translation (strict US importers).
    """

    PRIMARY = "primary"
    TRANSLATION = "translation"


class Hierarchy(StrEnum):
    """The SNOMED CT top-level hierarchy (semantic tag) of a code, as far as placement needs it (issue 13)."""

    PROCEDURE = "procedure"  # << 71388002 |Procedure| (regime/therapy included)
    DISORDER = "disorder"  # << 64572001 |Disease|
    FINDING = "finding"  # << 404684003 |Clinical finding| that is not a disorder
    FAMILY_HISTORY = "family-history"  # << 416471007 |Family history of clinical finding| (situation)
    PAST_HISTORY = "past-history"  # << 417662000 |History of clinical finding in subject| (situation)
    OCCUPATION = "occupation"  # << 14679004 |Occupation|
    OTHER = "other"  # known, and in none of the above (other situations, observable, record artifact, ...)


@dataclass(frozen=True, slots=True)
class DmdFacts:
    """What dm+d says of a VMP/AMP that GP Connect may not: route, dose form, unit of administration.
    Each a (SNOMED code, display) pair or None."""

    route: tuple[str, str] | None = None
    form: tuple[str, str] | None = None
    unit: tuple[str, str] | None = None


_EMPTY: MappingProxyType[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class TerminologyFacts:
    """Terminology facts about a bundle's codes, resolved before conversion (the converter does no I/O).

    ``hierarchy``: SNOMED code → Hierarchy, for the codes the source could classify; ``dmd``: dm+d code → DmdFacts.
    ``source`` says where they came from (a server URL, ``packaged``) and ``version`` its release; ``None`` source
    means no terminology was available — the fallback rules of docs/mapping/past_medical_history.md apply and the
    conversion report lists each item that fell back.
    """

    hierarchy: Mapping[str, Hierarchy] = field(default_factory=lambda: _EMPTY)
    dmd: Mapping[str, DmdFacts] = field(default_factory=lambda: _EMPTY)
    source: str | None = None
    version: str | None = None

    @property
    def available(self) -> bool:
        return self.source is not None


NO_TERMINOLOGY = TerminologyFacts()


@dataclass(frozen=True, slots=True)
class ConversionContext:
    """Everything the converter needs that is not in the bundle. Immutable; built by the caller (IHE layer from
    Settings, CLI from options). ``now=None`` means "derive from the bundle" (see docs/ccda.md): the bundle's
    ``meta.lastUpdated``, else the latest ``List.date`` (when the GP system produced the record), else
    1970-01-01T00:00:00Z with a report warning — never the wall clock, so output stays reproducible.
    """

    now: datetime | None = None
    custodian_name: str = "Xhuma Gateway"
    custodian_id_root: str = "2.16.840.1.113883.3.9999.1"
    custodian_id_extension: str | None = None
    author_software: str = "Xhuma GP Connect to C-CDA converter"
    title: str = T.DEFAULT_TITLE
    realm: str = "US"
    language_code: str = "en-GB"
    confidentiality_code: str = "N"
    product_coding: ProductCoding = ProductCoding.PRIMARY
    document_seed: str | None = None  # e.g. the XCA query id; mixed into the document id (not the entry ids)
    set_id: str | None = None  # a previous document's setId to version, else the document id
    version_number: int = 1
    terminology: TerminologyFacts = NO_TERMINOLOGY  # resolved by the caller (xhuma.nhs.terminology)


@dataclass(frozen=True, slots=True)
class Conversion:
    xml: bytes
    report: dict[str, Any]
    document_id: str
    title: str
    effective_time: datetime
    service_start: datetime | None
    service_stop: datetime | None
    confidentiality_code: str
    language_code: str
    nhs_number: str | None
    practice_ods: str | None
    practice_name: str | None


def context_from_settings(settings: Any, now: datetime | None = None, **overrides: Any) -> ConversionContext:
    """The ConversionContext of this deployment: custodian = the gateway operator (``organisation_name``,
    ``home_community_id``), realm and product coding from Settings. Duck-typed so that ccda imports no config."""
    values: dict[str, Any] = {
        "now": now,
        "custodian_name": settings.organisation_name,
        "custodian_id_root": settings.home_community_id,
        "realm": settings.realm,
        "product_coding": ProductCoding(getattr(settings, "ccda_product_coding", ProductCoding.PRIMARY.value)),
    }
    values.update(overrides)
    return ConversionContext(**values)

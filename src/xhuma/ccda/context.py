"""Conversion context (what the caller decides) and the Conversion result (what the IHE layer needs)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from xhuma.ccda import templates as T


class ProductCoding(StrEnum):
    """SPEC §10.1: how dm+d/SNOMED product codes meet the US RxNorm/CVX value sets.

    ``primary``: SNOMED as the primary code (what UK-aware receivers read; US value-set checks only warn).
    ``translation``: ``code nullFlavor="OTH"`` with the SNOMED code as a translation (strict US importers).
    """

    PRIMARY = "primary"
    TRANSLATION = "translation"


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

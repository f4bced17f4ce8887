"""The converter port of ``xhuma.records`` over ``xhuma.ccda.convert`` (the ConversionContext from Settings)."""

from __future__ import annotations

import uuid

from xhuma.config import Settings
from xhuma.ports import PdsPatient, StructuredRecord
from xhuma.records import ConvertedDocument


def unique_id_for(document_id: str) -> str:
    """The XDS uniqueId (OID form, ≤ 64 characters) for a ClinicalDocument/id.

    A UUID id becomes its ITU-T X.667 OID ``2.25.<integer>``, the same identifier in OID form.
    """
    try:
        return f"2.25.{uuid.UUID(document_id).int}"
    except ValueError:
        return document_id


def ccda_converter(record: StructuredRecord, patient: PdsPatient, settings: Settings) -> ConvertedDocument:
    from xhuma.ccda import convert
    from xhuma.ccda.context import context_from_settings

    # The one deployment context (custodian, realm, drug/vaccine coding), as `xhuma convert` uses too.
    overrides = {"terminology": record.terminology} if record.terminology is not None else {}
    conversion = convert(record.bundle, context_from_settings(settings, **overrides))
    return ConvertedDocument(
        xml=conversion.xml,
        document_id=unique_id_for(conversion.document_id),
        title=conversion.title,
        effective_time=conversion.effective_time,
        service_start=conversion.service_start,
        service_stop=conversion.service_stop,
        confidentiality_code=conversion.confidentiality_code,
        language_code=conversion.language_code,
        report=conversion.report,
    )

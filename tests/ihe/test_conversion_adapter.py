"""The gateway converts with the deployment's ConversionContext: the same settings give the same document as
`xhuma convert` (custodian, realm, and the drug/vaccine coding choice of SPEC §10.1)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from xhuma.ccda import convert
from xhuma.ccda.context import context_from_settings
from xhuma.config import Settings
from xhuma.ihe.conversion import ccda_converter
from xhuma.ports import PdsPatient, StructuredRecord

MEDICATIONS_RECORD = "gpconnect/uclh-xhuma/9690937472.json"  # 27 medications


def test_gateway_document_honours_the_product_coding_setting(
    make_settings: Callable[..., Settings], data_dir: Path
) -> None:
    bundle = json.loads((data_dir / MEDICATIONS_RECORD).read_text())
    record = StructuredRecord(bundle=bundle, ods_code="A20047", asid="918999198993", trace_id="t",
                              retrieved_at=datetime(2026, 11, 25, tzinfo=UTC))
    settings = make_settings(ccda_product_coding="translation", organisation_name="Trust Gateway")

    served = ccda_converter(record, PdsPatient(nhs_number="9690937472"), settings)

    assert served.xml == convert(bundle, context_from_settings(settings)).xml
    assert served.xml != convert(bundle, context_from_settings(make_settings())).xml
    assert b"Trust Gateway" in served.xml

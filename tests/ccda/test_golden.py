"""Golden files (ids and clock injected): the whole document for a few fixtures, byte for byte.

Regenerate after an intended change with ``XHUMA_REGENERATE_GOLDEN=1 pytest tests/ccda/test_golden.py`` and
review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lxml import etree
from tests.ccda.conftest import converted

GOLDEN = Path(__file__).resolve().parent / "golden"
# Read at import time: the project's root conftest isolates tests from XHUMA_* settings variables.
REGENERATE = os.environ.get("XHUMA_REGENERATE_GOLDEN") == "1"
CASES = ["gpconnect-spec/allergies_response1", "gpconnect-spec/meds_response", "gpconnect-spec/immunizations_response2",
         "uclh-xhuma/9690937472"]


def _pretty(xml: bytes) -> bytes:
    return etree.tostring(etree.fromstring(xml), pretty_print=True, xml_declaration=True, encoding="UTF-8")


@pytest.mark.parametrize("name", CASES)
def test_output_matches_golden_file(name: str) -> None:
    path = GOLDEN / (name.replace("/", "__") + ".xml")
    actual = _pretty(converted(name).xml)
    if REGENERATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(actual)
    assert path.exists(), f"missing golden file {path.name}: run with XHUMA_REGENERATE_GOLDEN=1"
    assert actual == path.read_bytes()

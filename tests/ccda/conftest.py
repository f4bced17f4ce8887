"""Shared fixtures of the converter tests: the GP Connect fixture bundles and a fixed conversion context."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from xhuma.ccda import Conversion, ConversionContext, convert

DATA = Path(__file__).resolve().parents[1] / "data" / "gpconnect"
FIXTURES = sorted(DATA.glob("*/*.json"))
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
CONTEXT = ConversionContext(now=NOW)
NS = {"c": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}


def fixture_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


@cache
def load(name: str) -> dict[str, Any]:
    """A fixture bundle by ``folder/stem`` (fresh parse each call site must not mutate it: use copy.deepcopy)."""
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


@cache
def converted(name: str) -> Conversion:
    return convert(load(name), CONTEXT)


def tree(conversion: Conversion) -> etree._Element:
    return etree.fromstring(conversion.xml)


@pytest.fixture(params=FIXTURES, ids=fixture_id)
def fixture_name(request: pytest.FixtureRequest) -> str:
    return fixture_id(request.param)

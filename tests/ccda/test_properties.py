"""Property-based: mutated real bundles never make the converter raise, and the output stays schema-valid
(LESSONS 24: one awkward item never costs the document). Bounded example counts keep the suite fast."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from tests.ccda.conftest import CONTEXT, load

from xhuma.ccda import convert
from xhuma.ccda.validate import cda_schema

SOURCES = ["gpconnect-spec/allergies_response1", "gpconnect-spec/meds_response",
           "gpconnect-spec/immunizations_response2", "gp2gp-adaptor/docs-example-response",
           "uclh-xhuma/9690937286"]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["", " ", "2020-13-45", "2019", "2019-02-30T25:61:00Z", "\x00\x0b",
                                           "http://x y", "urn:oid:1.2.3", "#contained", "Patient/p"]),
)
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)), max_leaves=8)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for position, value in enumerate(node):
            out += _paths(value, (*prefix, position))
    return out


def _mutate(bundle: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    mutated = copy.deepcopy(bundle)
    paths = [p for p in _paths(mutated) if p[0] == "entry"]
    for _ in range(data.draw(st.integers(1, 6))):
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent: Any = mutated
        try:
            for step in path[:-1]:
                parent = parent[step]
            action = data.draw(st.sampled_from(["delete", "replace", "duplicate"]))
            if action == "delete":
                del parent[path[-1]]
            elif action == "replace":
                parent[path[-1]] = data.draw(json_values)
            elif isinstance(parent, list):
                parent.append(copy.deepcopy(parent[path[-1]]))
        except (KeyError, IndexError, TypeError):
            continue
        paths = [p for p in _paths(mutated) if p[0] == "entry"]
    return mutated


EXAMPLES = int(os.environ.get("CCDA_PROPERTY_EXAMPLES", "60"))  # raise locally for a deeper search


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(source=st.sampled_from(SOURCES), data=st.data())
def test_mutated_bundles_convert_to_schema_valid_documents(source: str, data: st.DataObject) -> None:
    conversion = convert(_mutate(load(source), data), CONTEXT)
    document = etree.fromstring(conversion.xml)
    schema = cda_schema()
    assert schema.validate(document), str(schema.error_log)
    assert conversion.report["resources"] is not None


def _replace_everywhere(node: Any, key: str, value: Any) -> None:
    if isinstance(node, dict):
        for name in list(node):
            if name == key:
                node[name] = copy.deepcopy(value)
            else:
                _replace_everywhere(node[name], key, value)
    elif isinstance(node, list):
        for item in node:
            _replace_everywhere(item, key, value)


@pytest.mark.parametrize("key", ["system", "code", "url", "status", "use", "unit", "comparator", "gender"])
@pytest.mark.parametrize("value", [[], {}], ids=["list", "object"])
def test_a_list_or_object_where_every_resource_has_a_string_still_converts_to_a_valid_document(
        key: str, value: Any) -> None:
    """Bad input is a clear outcome, never a crash: a JSON list or object (unhashable: a set or dict lookup of it
    raises TypeError) in place of every ``system``, ``code``, … of the bundle's resources. Found by the property
    test above (an organisation identifier's ``system`` as a list made the header, and so the whole conversion,
    fail)."""
    schema = cda_schema()
    for source in SOURCES:
        bundle = copy.deepcopy(load(source))  # load's bundles are shared
        _replace_everywhere(bundle["entry"], key, value)
        document = etree.fromstring(convert(bundle, CONTEXT).xml)
        assert schema.validate(document), f"{source}: {schema.error_log}"

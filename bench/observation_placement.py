"""Where each fixture's Observations end up (prints figures; issue 13's "≥ 90% of Observations in entries").

For every GP Connect fixture bundle: the Observations, how many became structured entries (and in which sections),
the share, and what the others are (their outcome, section and whether they carry a value). Numeric Observations
that are not entries are listed by id: there should be none (tests/ccda/test_placement.py asserts it).

    .venv/bin/python bench/observation_placement.py [BUNDLE.json ...]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from xhuma.ccda import ConversionContext, convert

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = sorted((ROOT / "tests" / "data" / "gpconnect").glob("*/*.json"))
CONTEXT = ConversionContext(now=datetime(2024, 1, 1, tzinfo=UTC))


def observations(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Observation":
            found[f"Observation/{resource.get('id')}"] = resource
    return found


def _context(bundle: dict[str, Any], terminology: str) -> ConversionContext:
    if terminology == "none":
        return CONTEXT
    from dataclasses import replace

    from xhuma.nhs.terminology import packaged_facts

    return replace(CONTEXT, terminology=packaged_facts(bundle))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path)
    parser.add_argument("--terminology", choices=("none", "packaged"), default="none",
                        help="terminology facts (issue 13): none (fallbacks) or the packaged subset")
    args = parser.parse_args()
    paths = args.bundles or DEFAULT
    print(f"{'bundle':52} {'obs':>5} {'entries':>7} {'share':>6}  not in entries (outcome/section: count)")
    total = Counter[str]()
    for path in paths:
        bundle = orjson.loads(path.read_bytes())
        source = observations(bundle)
        report = convert(bundle, _context(bundle, args.terminology)).report
        outcomes = {o["resource"].split("#")[0]: o for o in report["resources"] if o["type"] == "Observation"}
        entries = sum(1 for o in outcomes.values() if o["outcome"] == "entry")
        others = Counter(f"{o['outcome']}/{o.get('section')}{'' if _valued(source.get(key)) else ' (no value)'}"
                         for key, o in outcomes.items() if o["outcome"] != "entry")
        lost = [key for key, o in outcomes.items() if o["outcome"] != "entry" and _numeric(source.get(key))]
        share = f"{100 * entries / len(outcomes):5.1f}%" if outcomes else "    -"
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        print(f"{name[-52:]:52} {len(outcomes):5} {entries:7} {share:>6}  "
              + ", ".join(f"{k}: {v}" for k, v in others.most_common()))
        if lost:
            print(f"    numeric values not in entries: {', '.join(lost)}")
        total["observations"] += len(outcomes)
        total["entries"] += entries
    if total["observations"]:
        print(f"all fixtures: {total['entries']} of {total['observations']} Observations in entries "
              f"({100 * total['entries'] / total['observations']:.1f}%)")
    return 0


def _valued(resource: dict[str, Any] | None) -> bool:
    return resource is not None and any(key.startswith("value") for key in resource)


def _numeric(resource: dict[str, Any] | None) -> bool:
    quantity = (resource or {}).get("valueQuantity")
    return isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float)


if __name__ == "__main__":
    sys.exit(main())

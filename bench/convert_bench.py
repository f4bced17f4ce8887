"""Conversion speed and memory per fixture bundle (prints figures; not a timed test).

For each bundle: the floor (json.loads of the input + lxml serialisation of the output tree, measured in this
run), the conversion time (json.loads + convert, i.e. everything a request pays), their ratio, and the peak
memory above the process baseline (tracemalloc) during one conversion.

    .venv/bin/python bench/convert_bench.py [BUNDLE.json ...] [--repeat N]

Targets (issue 3): on 9692136744.json (1.15 MB) at most 4x the floor, at least 10x faster than the earlier
implementation's ~0.22 s (so <= 22 ms), and < 60 MB peak memory above the baseline.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from lxml import etree

from xhuma.ccda import ConversionContext, convert

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = sorted((ROOT / "tests" / "data" / "gpconnect").glob("*/*.json"))
CONTEXT = ConversionContext(now=None)


def best(run, repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return min(timings) if repeat < 5 else statistics.median(sorted(timings)[: max(1, repeat // 2)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    paths = args.bundles or DEFAULT
    print(f"{'bundle':58} {'KB':>7} {'floor ms':>9} {'convert ms':>11} {'ratio':>6} {'peak MB':>8}")
    for path in paths:
        raw = path.read_bytes()
        conversion = convert(json.loads(raw), CONTEXT)  # warm-up (imports, caches)
        tree = etree.fromstring(conversion.xml)

        def floor(raw: bytes = raw, tree: etree._Element = tree) -> None:
            json.loads(raw)
            etree.tostring(tree, xml_declaration=True, encoding="UTF-8")

        def full(raw: bytes = raw) -> None:
            convert(json.loads(raw), CONTEXT)

        floor_s = best(floor, args.repeat)
        convert_s = best(full, args.repeat)
        gc.collect()
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        full()
        peak = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        print(f"{name[-58:]:58} {len(raw) / 1024:7.0f} {floor_s * 1000:9.2f} {convert_s * 1000:11.2f} "
              f"{convert_s / floor_s:6.1f} {peak / 1e6:8.1f}")
    print("note: tracemalloc counts Python allocations; lxml's C tree memory is not included. For RSS use\n"
          "      /usr/bin/time -v .venv/bin/python bench/convert_bench.py "
          "tests/data/gpconnect/uclh-xhuma/9692136744.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

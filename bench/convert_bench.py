"""Conversion speed and memory per fixture bundle (prints figures; not a timed test).

For each bundle: the floor (orjson parse of the input + lxml serialisation of the output tree, measured in this
run), the conversion time (orjson parse, as the product parses GP Connect JSON, + convert: everything a request
pays, freeing included), their ratio, and the peak memory above the process baseline (tracemalloc) during one
conversion. Floor and conversion runs are interleaved after a warm-up and summarised by their median (min in
brackets; mean of the conversions, which includes any garbage-collector pauses); the machine load is printed before
and after (this is a shared machine).

    .venv/bin/python bench/convert_bench.py [BUNDLE.json ...] [--repeat N]   (default 30)

Targets (issues 3 and 13): on 9692136744.json (1.15 MB) at most 4x the floor, at least 10x faster than the
earlier implementation's ~0.22 s (so <= 22 ms), and < 60 MB peak memory above the baseline.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import orjson
from lxml import etree

from xhuma.ccda import ConversionContext, convert

try:
    from xhuma.ccda.document import clear_caches
except ImportError:  # an earlier revision of the converter (PYTHONPATH=… to compare): it had no memo caches

    def clear_caches() -> None:
        pass

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = sorted((ROOT / "tests" / "data" / "gpconnect").glob("*/*.json"))
CONTEXT = ConversionContext(now=None)


def timings(runs: dict[str, Callable[[], None]], repeat: int) -> dict[str, list[float]]:
    """``repeat`` timings of each run, interleaved (floor, convert, floor, …) so that a change in machine load
    affects both alike; one untimed warm-up round first."""
    out: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    gc.collect()
    for _ in range(repeat):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            out[name].append(time.perf_counter() - start)
    return out


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--terminology", choices=("none", "packaged"), default="none",
                        help="terminology facts given to the converter (issue 13; resolved once, outside the timing)")
    args = parser.parse_args()
    paths = args.bundles or DEFAULT
    print(f"before: {load()}; {args.repeat} interleaved runs each after a warm-up; ms = median (min)")
    print(f"{'bundle':58} {'KB':>7} {'floor ms':>14} {'convert ms':>14} {'mean':>7} {'ratio':>6} {'cold ms':>8} "
          f"{'peak MB':>8}")
    for path in paths:
        raw = path.read_bytes()
        context = CONTEXT
        if args.terminology == "packaged":  # resolved before conversion, as records.py and `xhuma convert` do
            from dataclasses import replace

            from xhuma.nhs.terminology import packaged_facts

            context = replace(CONTEXT, terminology=packaged_facts(orjson.loads(raw)))
        conversion = convert(orjson.loads(raw), context)  # warm-up (imports, caches)
        tree = etree.fromstring(conversion.xml)

        def floor(raw: bytes = raw, tree: etree._Element = tree) -> None:
            orjson.loads(raw)
            etree.tostring(tree, xml_declaration=True, encoding="UTF-8")

        def full(raw: bytes = raw, context: ConversionContext = context) -> None:
            convert(orjson.loads(raw), context)

        def cold(raw: bytes = raw, context: ConversionContext = context) -> None:
            clear_caches()
            convert(orjson.loads(raw), context)

        measured = timings({"floor": floor, "convert": full, "cold": cold}, args.repeat)
        floor_s = statistics.median(measured["floor"])
        convert_s = statistics.median(measured["convert"])
        gc.collect()
        tracemalloc.start()
        baseline = tracemalloc.get_traced_memory()[0]
        full()
        peak = tracemalloc.get_traced_memory()[1] - baseline
        tracemalloc.stop()
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        print(f"{name[-58:]:58} {len(raw) / 1024:7.0f} {floor_s * 1000:6.2f} ({min(measured['floor']) * 1000:5.2f}) "
              f"{convert_s * 1000:6.2f} ({min(measured['convert']) * 1000:5.2f}) "
              f"{statistics.fmean(measured['convert']) * 1000:7.2f} {convert_s / floor_s:6.1f} "
              f"{statistics.median(measured['cold']) * 1000:8.2f} {peak / 1e6:8.1f}")
    print(f"after: {load()}")
    print("note: ratio = median convert / median floor. cold = convert with the converter's memo caches emptied\n"
          "      first (serialised attributes, dates, units: the same bundle converted again finds them filled).\n"
          "      tracemalloc counts Python allocations; lxml's C tree memory is not included. For RSS use\n"
          "      /usr/bin/time -v .venv/bin/python bench/convert_bench.py "
          "tests/data/gpconnect/uclh-xhuma/9692136744.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())

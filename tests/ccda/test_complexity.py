"""The converter stays easy to extend: no function of src/xhuma/ccda above cyclomatic complexity 20 (radon)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from radon.complexity import cc_visit

CCDA = Path(__file__).resolve().parents[2] / "src" / "xhuma" / "ccda"
LIMIT = 20


def blocks(code: str) -> Iterator[Any]:
    """Every function, method and closure radon sees, once (cc_visit answers methods both on their own and inside
    their class; a class's own figure is not a function's)."""
    pending = list(cc_visit(code))
    seen: set[tuple[str, int]] = set()
    while pending:
        block = pending.pop()
        pending += [*getattr(block, "methods", ()), *getattr(block, "closures", ())]
        if not hasattr(block, "methods") and (block.fullname, block.lineno) not in seen:
            seen.add((block.fullname, block.lineno))
            yield block


def test_radon_sees_methods_and_closures_of_a_too_complex_function() -> None:
    branches = "".join(f"        if x == {n}:\n            return {n}\n" for n in range(LIMIT + 1))
    code = f"class A:\n    def m(self, x):\n{branches}        return -1\n"
    assert [(b.fullname, b.complexity) for b in blocks(code)] == [("A.m", LIMIT + 2)]


def test_no_converter_function_is_above_cyclomatic_complexity_20() -> None:
    too_complex = []
    sources = sorted(CCDA.rglob("*.py"))
    assert len(sources) > 20  # the converter's modules were found
    for path in sources:
        for block in blocks(path.read_text(encoding="utf-8")):
            if block.complexity > LIMIT:
                too_complex.append(f"{path.relative_to(CCDA)}:{block.lineno} {block.fullname} ({block.complexity})")
    assert not too_complex, "split these functions (radon cc): " + ", ".join(too_complex)

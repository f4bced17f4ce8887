"""The gateway stays easy to extend: no function of src/xhuma/ihe, src/xhuma/nhs (the simulator included) or
src/xhuma/security above cyclomatic complexity 20 (radon), the converter's limit (tests/ccda/test_complexity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.ccda.test_complexity import LIMIT, blocks

SRC = Path(__file__).resolve().parents[2] / "src" / "xhuma"


@pytest.mark.parametrize(("package", "at_least"), [("ihe", 8), ("nhs", 15), ("security", 5)])
def test_no_gateway_function_is_above_cyclomatic_complexity_20(package: str, at_least: int) -> None:
    sources = sorted((SRC / package).rglob("*.py"))
    assert len(sources) >= at_least  # the package's modules (and the simulator's, under nhs/) were found
    too_complex = [
        f"{path.relative_to(SRC)}:{block.lineno} {block.fullname} ({block.complexity})"
        for path in sources
        for block in blocks(path.read_text(encoding="utf-8"))
        if block.complexity > LIMIT
    ]
    assert not too_complex, "split these functions (radon cc): " + ", ".join(too_complex)

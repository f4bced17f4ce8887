"""CDA narrative blocks: tables whose rows carry IDs that entries reference (LESSONS 27).

Only elements of the CDA NarrativeBlock schema are produced (``paragraph``, ``table``, ``thead``, ``tbody``,
``tr``, ``th``, ``td``, ``content``, ``br``, ``list``, ``item``). Rows are kept as plain data until the section
is finished, so a failed entry can be rolled back together with its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xhuma.ccda.datatypes import Element, el, xml_text

CellValue = str | Sequence[str] | None


@dataclass(slots=True)
class Cell:
    lines: list[str]
    content_id: str | None = None


@dataclass(slots=True)
class Row:
    """One narrative row. ``id`` is the value entries reference as ``#id``."""

    id: str
    cells: list[Cell] = field(default_factory=list)
    style: str | None = None

    @property
    def reference(self) -> str:
        return f"#{self.id}"

    def cell(self, value: CellValue, content: str | None = None) -> str | None:
        """Add a cell; with ``content`` the text is wrapped in ``<content ID=row-content>`` and its reference
        (for ``originalText``) is returned."""
        if value is None:
            lines: list[str] = []
        elif isinstance(value, str):
            lines = [value]
        else:
            lines = [v for v in value if v]
        content_id = f"{self.id}-{content}" if content and lines else None
        self.cells.append(Cell(lines, content_id))
        return f"#{content_id}" if content_id else None


@dataclass(slots=True)
class NarrativeTable:
    headers: tuple[str, ...]
    id_prefix: str
    caption: str | None = None
    rows: list[Row] = field(default_factory=list)
    _next: int = 1

    def row(self) -> Row:
        row = Row(f"{self.id_prefix}-{self._next}")
        self._next += 1
        self.rows.append(row)
        return row

    def render(self, text: Element) -> None:
        table = el(text, "table", {"border": "1", "width": "100%"})
        if self.caption:
            el(table, "caption", text=self.caption)
        head_row = el(el(table, "thead"), "tr")
        for header in self.headers:
            el(head_row, "th", text=header)
        body = el(table, "tbody")
        width = len(self.headers)
        for row in self.rows:
            tr = el(body, "tr", {"ID": row.id})
            if row.style:
                tr.set("styleCode", row.style)
            cells = row.cells[:width] + [Cell([]) for _ in range(width - len(row.cells))]
            for cell in cells:
                td = el(tr, "td")
                target = el(td, "content", {"ID": cell.content_id}) if cell.content_id else td
                _lines(target, cell.lines)


def _lines(parent: Element, lines: Sequence[str]) -> None:
    """Text lines separated by ``<br/>`` (mixed content built with lxml, never by string concatenation)."""
    last: Element | None = None
    for index, line in enumerate(lines):
        if index == 0:
            parent.text = xml_text(line)
            continue
        last = el(parent, "br")
        last.tail = xml_text(line)


def paragraph(text: Element, value: str, style: str | None = None) -> Element:
    element = el(text, "paragraph", text=value)
    if style:
        element.set("styleCode", style)
    return element

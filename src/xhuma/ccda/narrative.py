"""CDA narrative blocks: tables whose rows carry IDs that entries reference (LESSONS 27).

Only elements of the CDA NarrativeBlock schema are produced (``paragraph``, ``table``, ``thead``, ``tbody``,
``tr``, ``th``, ``td``, ``content``, ``br``, ``list``, ``item``). Rows are kept as plain data until the section
is finished, so a failed entry can be rolled back together with its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from xhuma.ccda.xmlwriter import Element, el, markup, one_attr, start_tag, unique_attrs

CellValue = str | Sequence[str] | None


@dataclass(slots=True)
class Row:
    """One narrative row. ``id`` is the value entries reference as ``#id``."""

    id: str
    cells: list[str] = field(default_factory=list)  # each cell as serialised ``<td>`` markup
    style: str | None = None

    @property
    def reference(self) -> str:
        return f"#{self.id}"

    def cell(self, value: CellValue, content: str | None = None) -> str | None:
        """Add a cell; with ``content`` the text is wrapped in ``<content ID=row-content>`` and its reference
        (for ``originalText``) is returned."""
        if isinstance(value, str):  # the common case: one line, kept even when empty (written ``<td></td>``)
            if not value and not content:  # an empty cell (a third of the one-line cells): nothing to test
                self.cells.append("<td></td>")
                return None
            # markup's plain-text test inline (two thousand cells in a large record), markup itself otherwise
            if value.isprintable() and "&" not in value and "<" not in value and ">" not in value:
                text = value
            else:
                text = markup(value)
        elif not value:  # None, or no lines
            self.cells.append("<td/>")
            return None
        else:
            lines = list(filter(None, value))  # empty lines dropped
            if not lines:
                self.cells.append("<td/>")
                return None
            # The lines separated by ``<br/>``, each escaped. They are plainly safe together exactly when each one
            # is (markup's test is per character): one test of their concatenation instead of one per line.
            try:
                whole = "".join(lines)
            except TypeError:  # a line that is not a str: ``markup`` writes its str()
                whole = "<"
            if whole.isprintable() and "&" not in whole and "<" not in whole and ">" not in whole:
                text = "<br/>".join(lines)
            else:
                text = "<br/>".join(map(markup, lines))
        if content:
            return self._content_cell(text, content)
        self.cells.append(f"<td>{text}</td>")
        return None

    def _content_cell(self, text: str, content: str) -> str:
        """A cell whose text (markup) is wrapped in ``<content ID=row-content>``; its reference."""
        content_id = f"{self.id}-{content}"
        # one_attr's plain-value test inline (a row's ID and a content name: plainly safe in practice)
        if content_id.isprintable() and "&" not in content_id and "<" not in content_id and ">" not in content_id \
                and '"' not in content_id:
            self.cells.append(f'<td><content ID="{content_id}">{text}</content></td>')
        else:
            self.cells.append(f"<td><content{one_attr('ID', content_id)}>{text}</content></td>")
        return f"#{content_id}"


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
        """The table, serialised directly (a third of a large document's elements are narrative cells)."""
        parts = [start_tag("table", _TABLE)]
        if self.caption:
            parts.append(f"<caption>{markup(self.caption)}</caption>")
        if self.headers:
            parts.append("<thead><tr>")
            parts.extend(f"<th>{markup(header)}</th>" for header in self.headers)
            parts.append("</tr></thead>")
        else:
            parts.append("<thead><tr/></thead>")
        if not self.rows:
            parts.append("<tbody/>")
        else:
            parts.append("<tbody>")
            width = len(self.headers)
            # A row's ID is this table's prefix, "-" and a number (``row``): plainly safe when the prefix is (the
            # registry's prefixes all are), written then without one test per row (only a row's styleCode is tested).
            plain_ids = one_attr("ID", self.id_prefix) == f' ID="{self.id_prefix}"'
            for row in self.rows:
                if plain_ids:
                    attrs = f' ID="{row.id}"{one_attr("styleCode", row.style)}' if row.style else f' ID="{row.id}"'
                elif row.style:
                    attrs = unique_attrs({"ID": row.id, "styleCode": row.style})
                else:
                    attrs = one_attr("ID", row.id)
                if not width:
                    parts.append(f"<tr{attrs}/>")
                    continue
                cells = row.cells
                if len(cells) == width:  # most rows
                    tds = "".join(cells)
                else:  # extra cells dropped, missing ones empty
                    tds = "".join(cells[:width] if len(cells) > width else [*cells, *["<td/>"] * (width - len(cells))])
                parts.append(f"<tr{attrs}>{tds}</tr>")
            parts.append("</tbody>")
        parts.append("</table>")
        # One part per row, not the table joined: one non-ASCII cell (an en dash) would make a joined table a
        # two-byte string, widened here and encoded slowly at the end (``xmlwriter._utf8`` encodes the few non-ASCII
        # parts on their own).
        text.extend(parts)


_TABLE = {"border": "1", "width": "100%"}


def paragraph(text: Element, value: str, style: str | None = None) -> Element:
    element = el(text, "paragraph", text=value)
    if style:
        element.set("styleCode", style)
    return element


def lines_of(text: str | None) -> list[str]:
    """Free text split into narrative lines (CDA narrative needs ``<br/>``, not newline characters)."""
    if not text:
        return []
    if "\n" not in text and "\r" not in text:  # most comments: one line
        line = text.strip()
        return [line] if line else []
    if "\r" in text:  # (most multi-line texts have plain newlines)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return list(filter(None, map(str.strip, text.split("\n"))))

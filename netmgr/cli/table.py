"""Docker-style output for list and inspect commands: tables, JSON, ``--format``.

Tables go through :func:`tabwrite`, a port of Go's ``text/tabwriter`` set up
as the docker CLI does (``tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)``): a
column is as wide as its widest cell plus 3 spaces, and at least 10; the last
cell of a line is never padded. This is what ``docker network ls`` prints::

    NETWORK ID     NAME      DRIVER    SCOPE
    4f8b6a1b2e0c   bridge    bridge    local

(IDs are 12 wide, so 15; ``bridge`` is 6 wide, 9 is below the minimum, so 10.)

``--format`` follows Docker's rules for list commands (:func:`format_output`)
and for inspect commands (:func:`format_inspect`). Every function returns the
whole text with each line ending in a newline, ready for ``sys.stdout.write``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from netmgr.cli import gotemplate

__all__ = ["MIN_WIDTH", "PADDING", "format_inspect", "format_output", "format_table", "tabwrite"]

#: docker CLI's tabwriter settings (cli/command/formatter/formatter.go)
MIN_WIDTH = 10
PADDING = 3
TABLE_KEY = "table"
JSON_KEY = "json"
INSPECT_INDENT = "    "

# Docker renders the header row with these replaced by pass-through functions,
# so `{{upper .Name}}` gives the header NAME, not its upper-cased value.
_HEADER_FUNCS: dict[str, Callable[..., Any]] = {
    name: (lambda value, *_: value)
    for name in ("json", "split", "join", "title", "lower", "upper", "truncate")
}
_SIMPLE_FIELD = re.compile(r"\{\{-?\s*\.(\w+)\s*-?\}\}")


def _layout(lines: list[list[str]], minwidth: int, padding: int) -> list[list[int]]:
    """Column widths for each line of one block, as Go's tabwriter.format computes them.

    A column runs over consecutive lines that have a cell in it; the last cell
    of a line is not in any column (it is not terminated by a tab).
    """
    result: list[list[int]] = [[] for _ in lines]

    def fmt(widths: list[int], line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            for k in range(line0, this):
                result[k] = widths
            line0, width = this, minwidth
            while this < line1 and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            fmt(widths + [width], line0, this)
            line0 = this
        for k in range(line0, line1):
            result[k] = widths

    fmt([], 0, len(lines))
    return result


def tabwrite(text: str, minwidth: int = MIN_WIDTH, padding: int = PADDING) -> str:
    """Align tab-separated cells like Go's tabwriter with padchar ' ' and no flags.

    A line without any tab ends an alignment block, as in Go, so the lines
    after it are aligned among themselves.
    """
    rows = [line.split("\t") for line in text.split("\n")]
    if len(rows[-1]) > 1 and rows[-1][-1] == "":
        rows[-1].pop()  # Flush does not terminate an empty last cell
    widths: list[list[int]] = []
    start = 0
    for i, cells in enumerate(rows):
        if len(cells) == 1 or i == len(rows) - 1:
            widths += _layout(rows[start:i + 1], minwidth, padding)
            start = i + 1
    out = []
    for cells, line_widths in zip(rows, widths):
        out.append("".join(
            cell + " " * (line_widths[j] - len(cell)) if j < len(line_widths) else cell
            for j, cell in enumerate(cells)))
    return "\n".join(out)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header line and one line per row, aligned as ``docker ... ls`` prints them."""
    lines = ["\t".join(headers)] + ["\t".join(row) for row in rows]
    return tabwrite("\n".join(lines) + "\n")


class _HeaderMap(dict[str, str]):
    """Header data for a table template: known fields by name, others upper-cased."""

    def __missing__(self, key: str) -> str:
        return key.upper()


def _header_names(default_columns: Sequence[tuple[str, str]],
                  headers: Mapping[str, str] | None) -> _HeaderMap:
    names = _HeaderMap()
    for header, template in default_columns:
        match = _SIMPLE_FIELD.fullmatch(template.strip())
        if match:
            names[match.group(1)] = header
    names.update(headers or {})
    return names


def _preformat(template: str) -> str:
    """Docker's preFormat: trim spaces, turn the two characters \\t and \\n into real ones."""
    return template.strip(" ").replace("\\t", "\t").replace("\\n", "\n")


def _default_table(objects: Sequence[Any], default_columns: Sequence[tuple[str, str]]) -> str:
    templates = [gotemplate.compile(template) for _, template in default_columns]
    rows = [[t.execute(obj) for t in templates] for obj in objects]
    return format_table([header for header, _ in default_columns], rows)


def format_output(fmt: str | None, objects: Sequence[Any],
                  default_columns: Sequence[tuple[str, str]],
                  headers: Mapping[str, str] | None = None) -> str:
    """Render *objects* for a list command's ``--format`` the way the docker CLI does.

    * None, "" or "table": the default table, *default_columns* being
      ``(header, template)`` pairs such as ``("NETWORK ID", "{{.ID}}")``;
    * "json": one compact JSON object per line;
    * "table TEMPLATE": a table; ``\\t`` in the template separates columns and
      the header row is the template rendered over the field names: *headers*
      maps a field to its header (``ID`` -> ``NETWORK ID``; fields that
      *default_columns* shows as a bare ``{{.Field}}`` are known already), other
      fields show upper-cased;
    * anything else: the template rendered once per object, each followed by a
      newline.

    As in Docker, surrounding spaces of a template are dropped and the two
    characters ``\\t`` and ``\\n`` stand for a tab and a newline. A bad template
    raises InvalidConfig.
    """
    if not fmt or fmt == TABLE_KEY:
        return _default_table(objects, default_columns)
    if fmt == JSON_KEY:
        return "".join(gotemplate.to_json(obj) + "\n" for obj in objects)
    is_table = fmt.startswith(TABLE_KEY)
    template = gotemplate.compile(_preformat(fmt[len(TABLE_KEY):] if is_table else fmt))
    body = "".join(template.execute(obj) + "\n" for obj in objects)
    if not is_table:
        return body
    # Docker ignores an error in the header row and keeps what was written.
    header = template.execute(_header_names(default_columns, headers), funcs=_HEADER_FUNCS,
                              partial=True)
    return tabwrite(header + "\n" + body)


def format_inspect(fmt: str | None, objects: Sequence[Any]) -> str:
    """Render *objects* for an inspect command's ``-f/--format`` the way the docker CLI does.

    * None or "": a JSON array indented by 4 spaces (Go's json.MarshalIndent);
    * "json": the same array on one line, as docker 24 and later print it;
    * a template: rendered once per object, each followed by a newline (used
      verbatim: inspect does not trim it nor translate ``\\t``).
    """
    if not fmt:
        return gotemplate.to_json(list(objects), indent=INSPECT_INDENT) + "\n"
    if fmt == JSON_KEY:
        return gotemplate.to_json(list(objects)) + "\n"
    template = gotemplate.compile(fmt)
    return "".join(template.execute(obj) + "\n" for obj in objects)

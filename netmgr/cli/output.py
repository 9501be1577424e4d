"""Printing for the CLI: tables, ``--format`` templates, inspect JSON."""

from __future__ import annotations

import sys

from netmgr.cli import table


def print_list(fmt: str | None, rows: list[dict], columns: list[tuple[str, str]], headers: dict[str, str],
               quiet_field: str | None = None, quiet: bool = False) -> None:
    """A list command's output: ``-q``, the default table, ``json``, ``table TPL`` or a template."""
    if quiet:
        for row in rows:
            print(row[quiet_field or "ID"])
        return
    text = table.format_output(fmt, rows, columns, headers)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def print_inspect(fmt: str | None, docs: list[dict]) -> None:
    """An inspect command's output: an indented JSON array, or one template line per object."""
    text = table.format_inspect(fmt, docs)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")

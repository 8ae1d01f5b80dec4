"""The one renderer of tabular command output: a rich table, CSV or JSON, from column names and rows.

Also the two consoles every command prints through (standard output and standard error).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.table import Table

#: standard output of every command (rich markup)
out = Console()
#: standard error: warnings and the one-line error message
err = Console(stderr=True)


class OutputFormat(StrEnum):
    """How tabular output is written."""

    table = "table"
    csv = "csv"
    json = "json"


def text(value: object) -> str:
    """A value as the text of a table or CSV cell: None is empty, bytes are PostgreSQL's hex form."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    return str(value)


@dataclass(frozen=True)
class Column:
    """A column of the table format: ``value(record) -> cell text`` (default: the field ``key`` as text)."""

    key: str
    header: str | None = None
    justify: Literal["left", "right"] = "left"
    no_wrap: bool = False
    overflow: Literal["fold", "crop", "ellipsis"] = "ellipsis"
    min_width: int | None = None
    value: Callable[[Mapping[str, Any]], str] | None = None

    def cell(self, record: Mapping[str, Any]) -> str:
        return self.value(record) if self.value is not None else text(record.get(self.key))


def render(
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    fmt: OutputFormat = OutputFormat.table,
    *,
    columns: Sequence[Column] | None = None,
    title: str | None = None,
    footer: str | None = None,
) -> None:
    """Print ``rows`` (tuples in the order of ``fields``) to standard output.

    CSV and JSON carry every field; the table shows ``columns`` (default: every field as text),
    then ``footer`` (rich markup) below it.
    """
    if fmt is OutputFormat.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(fields)
        writer.writerows([text(v) for v in row] for row in rows)
        return
    if fmt is OutputFormat.json:
        records = [dict(zip(fields, row, strict=True)) for row in rows]
        print(json.dumps(records, default=text, indent=1))
        return
    table = Table(title=title)
    if columns is None:
        for name in fields:
            table.add_column(name)
        for row in rows:
            table.add_row(*(escape(text(v)) for v in row))
    else:
        for column in columns:
            table.add_column(
                column.header if column.header is not None else column.key,
                justify=column.justify,
                no_wrap=column.no_wrap,
                overflow=column.overflow,
                min_width=column.min_width,
            )
        for row in rows:
            record = dict(zip(fields, row, strict=True))
            table.add_row(*(escape(column.cell(record)) for column in columns))
    out.print(table)
    if footer:
        out.print(footer, highlight=False)


def records_rows(fields: Sequence[str], records: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Dict records as rows in the order of ``fields``."""
    return [tuple(record.get(name) for name in fields) for record in records]


def line(label: str, value: object, width: int = 13) -> None:
    """A bold ``label`` padded to ``width``, then ``value`` (one line of a key/value listing)."""
    out.print(f"[bold]{label:<{width}}[/] {value}", highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A warning on standard error (the message is printed literally)."""
    err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)

"""The one renderer of tabular command output: a rich table, CSV or JSON, from column names and rows.

Also the two consoles every command prints through (standard output and standard error), and the progress of
long steps (:func:`progress`): rich bars on a terminal, one plain line per finished unit otherwise (CI logs,
``nohup``, pipes).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

#: columns of output that is not a terminal (CI logs, pipes, files; COLUMNS overrides): room for every digit of a
#: table, where rich would squeeze it into 80 columns and cut numbers short
PIPED_WIDTH = 160

#: standard output of every command (rich markup)
out = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)
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


class Step:
    """One counted step of a :class:`Steps` display; call it as units finish: ``step(done, total, detail)``.

    Its plain line reads ``"{label}: {count} {detail}"``, ``count`` formatted from ``done`` and ``total``
    (e.g. ``"epoch {done}/{total}"``, ``"{done}/{total} relaxed"``).
    """

    def __init__(self, steps: Steps, label: str, total: int | None, count: str) -> None:
        self.label = label
        self.total = total
        self.count = count
        self._steps = steps
        self._printed = 0  # the last ``done`` given a plain line
        self._bar = None if steps.bars is None else steps.bars.add_task(escape(label), total=total, detail="")

    def __call__(self, done: int, total: int | None = None, detail: str = "") -> None:
        """``done`` units of ``total`` (default: the step's) have finished; ``detail`` describes the last one."""
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._steps.bars.update(self._bar, completed=done, total=self.total, detail=escape(detail))
            return
        with self._steps.lock:
            if done <= self._printed:
                return
            self._printed = done
        total_text = "?" if self.total is None else str(self.total)
        line = f"{self.label}: {self.count.format(done=done, total=total_text)}"
        self._steps.console.print(f"{line} {detail}" if detail else line, markup=False, highlight=False, soft_wrap=True)


class Steps:
    """The long steps of one command: :meth:`step` for one step, :meth:`reporter` for labelled ones."""

    def __init__(self, console: Console, bars: Progress | None) -> None:
        self.console = console
        self.bars = bars  # None: plain lines
        self.lock = threading.Lock()  # steps may be reported from other threads (Dask callbacks, watchers)
        self._labelled: dict[str, Step] = {}

    def step(self, label: str, total: int | None = None, *, count: str = "{done}/{total}") -> Step:
        """A new step named ``label`` of ``total`` units (None: not known yet)."""
        return Step(self, label, total, count)

    def reporter(self, count: str = "{done}/{total}") -> Callable[[str, int, int], None]:
        """A ``(label, done, total)`` callback: one step per label, created at its first report."""

        def report(label: str, done: int, total: int) -> None:
            with self.lock:
                step = self._labelled.get(label)
                if step is None:
                    step = self._labelled[label] = self.step(label, total, count=count)
            step(done, total)

        return report


@contextmanager
def progress(console: Console | None = None) -> Iterator[Steps]:
    """Progress of long steps on ``console`` (default: standard output).

    A terminal gets a rich bar per step (label, bar, done/total, detail, elapsed time); anything else gets one
    plain line per finished unit, e.g. ``density chgnet-0.3.0: 7/12 relaxed``.
    """
    console = console if console is not None else out
    if not console.is_terminal:
        yield Steps(console, None)
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bars:
        yield Steps(console, bars)

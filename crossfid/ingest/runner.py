"""Running one ingest from the command line: progress, summary table, exit code.

Exit codes of ``crossfid ingest ...`` (documented in docs/ingestion.md):

* 0 — everything read was stored (or was already present);
* 3 — the run finished, but some input was quarantined (see the ``quarantine`` table);
* 1 — the run could not be done at all (bad arguments, no database, unreadable source).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from crossfid.ingest.loader import IngestSummary, ingest
from crossfid.ingest.records import Bundle, Record

EXIT_OK = 0
EXIT_QUARANTINED = 3


def _counted(records: Iterable[Record], progress: Progress, task_id: Any) -> Iterator[Record]:
    frames = 0
    for n, record in enumerate(records, start=1):
        if isinstance(record, Bundle):
            frames += sum(len(t.frames) for t in record.tasks)
        progress.update(task_id, advance=1, description=f"read {n:,} records, {frames:,} frames")
        yield record


def run_ingest(
    source_name: str,
    source_kind: str,
    records: Iterable[Record],
    *,
    arguments: dict[str, Any],
    description: str | None = None,
    total: int | None = None,
    console: Console | None = None,
) -> tuple[IngestSummary, int]:
    """Ingest with a progress bar and print the summary; return it and the exit code."""
    from crossfid.runtime.database import engine as configured_engine

    console = console or Console()
    engine = configured_engine()  # migrated: a fresh database is usable without a separate `crossfid db init`
    columns = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
    if total:
        columns += [BarColumn(), TextColumn("{task.completed}/{task.total}")]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as progress:
        bar = progress.add_task(f"ingesting {escape(source_name)}", total=total)
        stored = progress.add_task("stored 0 tasks, 0 frames", total=None)

        def on_batch(summary: IngestSummary) -> None:
            progress.update(
                stored,
                description=f"stored {summary.tasks_added:,} tasks, {summary.frames_added:,} frames, "
                f"{summary.quarantined:,} quarantined",
            )
            if not console.is_terminal:
                console.print(
                    f"{summary.records:,} records: {summary.tasks_added:,} tasks, {summary.frames_added:,} frames "
                    f"added, {summary.quarantined:,} quarantined"
                )

        summary = ingest(
            engine,
            source_name,
            source_kind,
            _counted(records, progress, bar),
            arguments=arguments,
            description=description,
            progress=on_batch,
        )
    engine.dispose()
    print_summary(summary, console)
    return summary, EXIT_QUARANTINED if summary.quarantined else EXIT_OK


def print_summary(summary: IngestSummary, console: Console) -> None:
    """The summary tables. Reasons and names are shown as plain text: a reason quoting the input
    (``[/x]``, control characters) can neither break rich's markup nor reach the terminal raw."""
    table = Table(title=_plain(f"ingest run {summary.ingest_run_id} ({summary.source})"), show_header=True)
    table.add_column("")
    table.add_column("added", justify="right")
    table.add_column("already present", justify="right")
    table.add_row("tasks", f"{summary.tasks_added:,}", f"{summary.tasks_already_present:,}")
    table.add_row("frames", f"{summary.frames_added:,}", "")
    table.add_row("reference entries", f"{summary.references_added:,}", f"{summary.references_already_present:,}")
    table.add_row("raw documents", f"{summary.raw_documents_added:,}", "")
    table.add_row("quarantined", f"{summary.quarantined:,}", "")
    if summary.conflicts:
        table.add_row("  of which conflicting duplicates", f"{summary.conflicts:,}", "")
    console.print(table)
    if summary.quarantine_reasons:
        reasons = Table("reason", "count", title="quarantined input (see the quarantine table)")
        for reason, count in sorted(summary.quarantine_reasons.items(), key=lambda kv: -kv[1])[:15]:
            reasons.add_row(_plain(reason), str(count))
        console.print(reasons)


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _plain(value: str) -> Text:
    """``value`` as literal text for the terminal: no rich markup, control characters shown as escapes."""
    return Text(_CONTROL.sub(_escape_control, value))


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

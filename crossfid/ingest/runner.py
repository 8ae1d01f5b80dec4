"""Running one ingest from the command line: progress, summary table, exit code.

The summary groups quarantine reasons by kind (:func:`reason_kind`): "task mp-1 has no
ionic steps" and "task mp-2 has no ionic steps" are one row "task … has no ionic steps"
with their count and one example location.

Exit codes of ``crossfid ingest ...`` (documented in docs/ingestion.md):

* 0 — everything read was stored (or was already present);
* 3 — the run finished, but some input was quarantined (see the ``quarantine`` table);
* 1 — the run could not be done at all (bad arguments, no database, unreadable source).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from crossfid.ingest.loader import IngestSummary, ingest
from crossfid.ingest.records import Bundle, Record, Refusal, escape_text

EXIT_OK = 0
EXIT_QUARANTINED = 3


#: quarantine kinds shown in the summary (the rest are counted in one more row)
SHOWN_KINDS = 15


def _counted(records: Iterable[Record], progress: Progress, task_id: Any, examples: dict[str, str]) -> Iterator[Record]:
    """``records`` with the progress bar advanced and the first location of each refusal reason kept."""
    frames = 0
    for n, record in enumerate(records, start=1):
        if isinstance(record, Bundle):
            frames += sum(len(t.frames) for t in record.tasks)
        elif isinstance(record, Refusal) and record.reason:
            examples.setdefault(escape_text(str(record.reason)), escape_text(str(record.location)))
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
    examples: dict[str, str] = {}  # reason → first location, of the refusals the source made
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
            _counted(records, progress, bar, examples),
            arguments=arguments,
            description=description,
            progress=on_batch,
        )
    engine.dispose()
    print_summary(summary, console, examples)
    return summary, EXIT_QUARANTINED if summary.quarantined else EXIT_OK


def print_summary(summary: IngestSummary, console: Console, examples: Mapping[str, str] | None = None) -> None:
    """The summary tables; quarantine reasons grouped by kind, with an example location where one is known
    (``examples``: reason → location). Reasons and names are shown as plain text: a reason quoting the input
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
        groups = group_reasons(summary.quarantine_reasons, examples)
        reasons = Table(title="quarantined input by kind (see the quarantine table)")
        reasons.add_column("reason")
        reasons.add_column("count", justify="right")
        reasons.add_column("example location")
        for group in groups[:SHOWN_KINDS]:
            example = group.example_reason if group.count == 1 else group.kind
            where = group.example_location or ""
            reasons.add_row(_plain(example), f"{group.count:,}", _plain(where))
        rest = groups[SHOWN_KINDS:]
        if rest:
            reasons.add_row(f"… {len(rest):,} more kinds", f"{sum(g.count for g in rest):,}", "")
        console.print(reasons)


# --------------------------------------------------------------------------- quarantine reasons by kind


@dataclass(frozen=True)
class ReasonGroup:
    """Quarantine reasons of one kind: how many, and one of them with its location (None when unknown)."""

    kind: str
    count: int
    example_reason: str
    example_location: str | None


_ELLIPSIS = "…"
_NUMBER = re.compile(r"[-+±]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?:-\d+)?%?")
#: ids: an MP/AlphaID or a source-prefixed id (``mp-149``, ``mp-aaaaaaft``, ``vasp:Si#ab12``, ``mptrj:mp-1-0-3``)
_PREFIXED_ID = re.compile(r"[a-z][a-z0-9_]*[-:]\S*\d\S*|(?:mp|mvc)-[a-z]+")
_ALPHA_ID = re.compile(r"a{3}[a-z]{5}")  # a padded AlphaID task id (MP numbers < 26^5 start with "aaa")
_HEX = re.compile(r"(?=[0-9a-f]*\d)[0-9a-f]{8,}")
_OPENING = "([{'\"<"
_CLOSING = ")]}'\",;:.>"


def _is_path(core: str) -> bool:
    if core.startswith(("/", "./", "../", "~/")) or re.match(r"[A-Za-z]:\\", core):
        return len(core) > 1
    return core.count("/") >= 2 or ("/" in core and "." in core.rpartition("/")[2])


def _token_kind(core: str) -> str:
    """``core`` (a token without its surrounding punctuation) with an id, path or number replaced by …."""
    if _is_path(core):
        return _ELLIPSIS
    for pattern in (_NUMBER, _PREFIXED_ID, _ALPHA_ID, _HEX):
        if pattern.fullmatch(core):
            return _ELLIPSIS
    key, equals, value = core.partition("=")  # ICHARG=11
    if equals and key and value and _NUMBER.fullmatch(value):
        return f"{key}={_ELLIPSIS}"
    return core


def reason_kind(reason: str) -> str:
    """The kind of a quarantine reason: the reason with ids, paths, hashes and numbers replaced by ``…``.

    ``"task mp-1 has no ionic steps"`` and ``"task mp-2 has no ionic steps"`` → ``"task … has no
    ionic steps"``; ``"... (ICHARG = 11)"`` → ``"... (ICHARG = …)"``. Words with digits that are
    names (``r2SCAN``, ``e_0_energy``, ``PBE-D3``, ``MP2020``, ``3×3``) are kept.
    """
    out: list[str] = []
    for token in re.split(r"(\s+)", reason):
        if not token or token.isspace():
            out.append(token)
            continue
        start, end = 0, len(token)
        while start < end and token[start] in _OPENING:
            start += 1
        while end > start and token[end - 1] in _CLOSING:
            end -= 1
        core = token[start:end]
        out.append(token[:start] + (_token_kind(core) if core else "") + token[end:])
    return "".join(out)


def group_reasons(reasons: Mapping[str, int], examples: Mapping[str, str] | None = None) -> list[ReasonGroup]:
    """Reasons with their counts grouped by :func:`reason_kind`, most frequent kind first (then by kind).

    Each group's example is its most frequent reason (then the first in sorted order) that has a
    known location in ``examples`` (reason → location), else its most frequent reason.
    """
    examples = examples or {}
    by_kind: dict[str, list[tuple[str, int]]] = {}
    for reason, count in reasons.items():
        by_kind.setdefault(reason_kind(reason), []).append((reason, count))
    groups = []
    for kind, members in by_kind.items():
        ordered = sorted(members, key=lambda rc: (-rc[1], rc[0]))
        located = [reason for reason, _ in ordered if reason in examples]
        example = located[0] if located else ordered[0][0]
        groups.append(ReasonGroup(kind, sum(c for _, c in members), example, examples.get(example)))
    return sorted(groups, key=lambda g: (-g.count, g.kind))


_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def _plain(value: str) -> Text:
    """``value`` as literal text for the terminal: no rich markup, control characters shown as escapes."""
    return Text(_CONTROL.sub(_escape_control, value))


def _escape_control(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

"""The study's report as Markdown, with its figures as PNG files linked by relative path."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from crossfid.report.figures import FigureFile
from crossfid.report.study import SECTIONS, StudyReport
from crossfid.report.tables import (
    SECTION_TITLES,
    SURROGATE_NOTE,
    Table,
    digest,
    provenance_tables,
    section_tables,
    when,
)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(table: Table) -> str:
    """A pipe table under its title in italics (cells show their text; numbers right-aligned)."""
    numeric = [any(row[i].value is not None for row in table.rows) for i in range(len(table.headers))]
    lines = [
        f"*{_escape(table.title)}*",
        "",
        "| " + " | ".join(_escape(h) or " " for h in table.headers) + " |",
        "|" + "|".join("---:" if n else "---" for n in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_escape(c.text) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_study_markdown(report: StudyReport, figures: Sequence[FigureFile], folder: Path) -> str:
    """The report as Markdown; figure links are relative to ``folder`` (where the Markdown file is)."""
    lines = [
        f"# Cross-fidelity study: {report.dataset}, split {report.split_ref}",
        "",
        f"Generated {when(report.generated_at)} from the database. Dataset {report.dataset} "
        f"({report.fidelity_label}, {report.n_materials} materials, {report.n_frames} frames, energy label "
        f"{report.energy_label or 'not recorded'}), content hash `{digest(report.dataset_hash).text}`; split "
        f"{report.split_id} (seed {report.split_seed}), content hash `{digest(report.split_hash).text}`; data "
        f"sources: {', '.join(report.sources) or 'none'}. Full hashes are under Provenance.",
        "",
    ]
    if report.surrogate:
        lines += [f"> **{SURROGATE_NOTE}**", ""]
    for section in SECTIONS:
        lines += [f"## {SECTION_TITLES[section]}", ""]
        if section in report.missing:
            lines += [f"*{report.missing[section]}*", ""]
        for table in section_tables(report, section):
            lines += [render_table(table), ""]
        if section == "correlation" and report.correlation is not None:
            lines += [f"- {note}" for note in report.correlation.notes] + [""]
        for figure in figures:
            if figure.section == section:
                relative = Path(os.path.relpath(figure.path, folder)).as_posix()
                lines += [f"![{figure.alt}]({relative})", ""]
    lines += ["## Provenance", ""]
    for table in provenance_tables(report):
        lines += [render_table(table), ""]
    return "\n".join(lines)

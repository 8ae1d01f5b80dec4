"""``crossfid report study``: collect the study from the database, draw its figures, write HTML and Markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from crossfid.report.figures import FigureFile, write_figures
from crossfid.report.html import render_study_html
from crossfid.report.markdown import render_study_markdown
from crossfid.report.study import StudyReport, collect_study

#: file names inside the output folder
HTML_NAME = "study.html"
MARKDOWN_NAME = "study.md"
FIGURES_FOLDER = "study-figures"


@dataclass(frozen=True)
class StudyFiles:
    """What :func:`write_study_report` wrote, and the report it was made from."""

    report: StudyReport
    html: Path
    markdown: Path
    figures: list[FigureFile]


def write_study_report(engine: Engine, split: str | int, out: Path) -> StudyFiles:
    """Write ``out/study.html`` (self-contained) and ``out/study.md`` with its PNGs in ``out/study-figures/``."""
    out = Path(out)
    report = collect_study(engine, split)
    out.mkdir(parents=True, exist_ok=True)
    figures = write_figures(report, out / FIGURES_FOLDER)
    html = out / HTML_NAME
    html.write_text(render_study_html(report, figures), encoding="utf-8")
    markdown = out / MARKDOWN_NAME
    markdown.write_text(render_study_markdown(report, figures, out), encoding="utf-8")
    return StudyFiles(report, html, markdown, figures)

"""``crossfid report study``: the study's tables, figures and provenance for one split, from the database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crossfid.cli.options import SPLIT_HELP
from crossfid.cli.render import out, render

app = typer.Typer(help="Reports read from the database (the study's tables and figures).", no_args_is_help=True)


@app.command("study")
def study(
    split: Annotated[str, typer.Option(help=SPLIT_HELP)],
    directory: Annotated[
        Path, typer.Option("--out", help="Folder for study.html (self-contained), study.md and its PNG figures.")
    ] = Path("report"),
) -> None:
    """Per-method test MAEs, training curves and gradients, raw vs referenced correlation, element importance,
    density, formation and decomposition energies and the scaling law, each with its provenance.

    A section without data says which command makes it; an unknown split is an error (exit status 1).
    """
    from crossfid.report.build import write_study_report
    from crossfid.report.study import SECTIONS
    from crossfid.report.tables import SECTION_TITLES
    from crossfid.runtime.database import engine as make_engine

    engine = make_engine()
    try:
        files = write_study_report(engine, split, directory)
    finally:
        engine.dispose()
    report = files.report
    counts = {section: sum(f.section == section for f in files.figures) for section in SECTIONS}
    rows = [(SECTION_TITLES[section], counts[section], report.missing.get(section, "shown")) for section in SECTIONS]
    render(["section", "figures", "status"], rows, title=f"study report: {report.dataset}, split {report.split_ref}")
    if report.surrogate:
        out.print("[yellow]demo data: labels from a surrogate model (SevenNet-MF-0), not DFT[/]")
    figures = f" with {len(files.figures)} figures in {files.figures[0].path.parent}" if files.figures else ""
    out.print(f"wrote {files.html}\nwrote {files.markdown}{figures}", highlight=False, soft_wrap=True)

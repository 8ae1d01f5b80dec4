"""``crossfid dataset``: freeze curated frames into versions, split, audit for leaks, list, show, verify, export."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from crossfid.cli.options import (
    ENERGY_LABEL_HELP,
    EnergyLabel,
    Format,
    Scheduler,
    SplitArgument,
    Workers,
    fidelities,
    values,
)
from crossfid.cli.render import Column, OutputFormat, line, out, render
from crossfid.exit_codes import ExitCode

app = typer.Typer(
    help="Immutable dataset versions, leak-free splits, leakage audits and exports (extxyz, MPtrj).",
    no_args_is_help=True,
)


class Strategy(StrEnum):
    material = "material"
    structure_group = "structure-group"


class ExportFormat(StrEnum):
    extxyz = "extxyz"
    mptrj = "mptrj"
    parquet = "parquet"


#: ``dataset export``'s argument: a split, or for Parquet also a whole dataset version
ExportArgument = Annotated[
    str,
    typer.Argument(
        metavar="SPLIT|DATASET",
        help="Split id or DATASET[:VERSION]\\[/STRATEGY]\\[@SEED]; with --format parquet also a whole dataset "
        "version, NAME or NAME:VERSION (without / or @).",
    ),
]


class Representatives(StrEnum):
    final = "final"
    all = "all"


def _sizes(options: list[str] | None) -> list[int]:
    sizes = []
    for value in values(options):
        if not value.isdigit():
            raise typer.BadParameter(f"subset size {value!r} is not a positive integer", param_hint="--subsets")
        sizes.append(int(value))
    return sizes


def _engine():
    from crossfid.runtime.database import engine

    return engine()


@app.command("freeze")
def freeze(
    run: Annotated[int, typer.Option("--run", "-r", help="Curation run whose accepted frames become the dataset.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name; the version is numbered automatically.")],
    energy_label: Annotated[EnergyLabel, typer.Option("--energy-label", "-e", help=ENERGY_LABEL_HELP)],
    fidelity: Annotated[
        list[str] | None, typer.Option("--fidelity", "-f", help="Only frames of these task fidelities.")
    ] = None,
) -> None:
    """Freeze the frames a curation run accepted as a new, immutable dataset version."""
    from crossfid.curation.datasets import freeze_dataset

    engine = _engine()
    try:
        info = freeze_dataset(engine, run, name, fidelities(fidelity) or None, energy_label=energy_label.value)
    finally:
        engine.dispose()
    out.print(f"froze dataset [bold]{info.ref}[/] (id {info.id}) from curation run {run}", highlight=False)
    line("fidelities", ", ".join(info.fidelities))
    line("energy label", info.energy_label or "")
    line("frames", f"{info.n_frames:,}")
    line("materials", f"{info.n_materials:,}")
    line("elements", f"{info.n_elements} ({' '.join(info.elements)})")
    line("config hash", info.config_hash)
    line("content hash", info.content_hash)
    if info.identical_to:
        out.print(f"[yellow]same content as {', '.join(info.identical_to)}[/]", highlight=False)


@app.command("split")
def split(
    dataset: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or id.")],
    ratios: Annotated[str, typer.Option(help="train:val:test, e.g. 8:1:1 or 0.8:0.1:0.1.")] = "8:1:1",
    seed: Annotated[int, typer.Option(help="Seed of the assignment.")] = 0,
    strategy: Annotated[
        Strategy, typer.Option(help="Split by material id, or by StructureMatcher groups of relaxed structures.")
    ] = Strategy.material,
    subsets: Annotated[
        list[str] | None, typer.Option("--subsets", help="Nested training subset sizes (frames), e.g. 100,300,1000.")
    ] = None,
) -> None:
    """Split a dataset version into train/val/test (whole materials or structure groups) and freeze it."""
    from crossfid.curation.split_store import create_split

    sizes = _sizes(subsets)
    engine = _engine()
    try:
        info = create_split(engine, dataset, ratios, seed, strategy.value, sizes)
    finally:
        engine.dispose()
    verb = "created" if info.created else "exists:"
    out.print(
        f"{verb} split [bold]{info.id}[/] of {info.dataset} ({info.strategy}, {info.ratio_text}, seed {info.seed})",
        highlight=False,
    )
    table = Table("part", "frames", "materials", "fraction of frames")
    total = max(info.n_frames, 1)
    for part, counts in info.parts.items():
        table.add_row(part, f"{counts.n_frames:,}", f"{counts.n_materials:,}", f"{counts.n_frames / total:.3f}")
    out.print(table)
    for size, digest in info.subsets.items():
        line(f"subset {size}", digest)
    line("content hash", info.content_hash)
    empty = [
        p for p, r in zip(("train", "val", "test"), info.ratios, strict=True) if r > 0 and not info.parts[p].n_frames
    ]
    if empty:
        out.print(f"[yellow]warning:[/] {', '.join(empty)} got no frames (too few groups for these ratios)")


@app.command("audit")
def audit(
    split_ref: SplitArgument,
    ltol: Annotated[float, typer.Option(help="StructureMatcher fractional length tolerance.")] = 0.2,
    stol: Annotated[float, typer.Option(help="StructureMatcher site tolerance.")] = 0.3,
    angle_tol: Annotated[float, typer.Option(help="StructureMatcher angle tolerance (degrees).")] = 5.0,
    representatives: Annotated[
        Representatives, typer.Option(help="final: last frame of each task; all: every frame (slow).")
    ] = Representatives.final,
    workers: Workers = None,
    scheduler: Scheduler = None,
    show: Annotated[int, typer.Option(help="Print at most this many pairs (0: all).")] = 50,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full report as JSON here.")] = None,
    fail_on_leak: Annotated[
        bool, typer.Option(help=f"Exit with status {ExitCode.CHECK_FAILED.value} when a leak is found.")
    ] = False,
) -> None:
    """Find validation/test frames whose structure matches a training frame of another material."""
    from dataclasses import asdict

    from crossfid.curation.audit import audit_split
    from crossfid.runtime.dask import dask_client

    engine = _engine()
    try:
        with dask_client(workers, scheduler) as client:
            report = audit_split(
                engine,
                split_ref,
                ltol=ltol,
                stol=stol,
                angle_tol=angle_tol,
                representatives=representatives.value,
                client=client,
            )
    finally:
        engine.dispose()
    out.print(
        f"split {report.split_id} of {report.dataset} ({report.strategy}, seed {report.seed}): "
        f"{report.n_representatives:,} structures, {report.n_comparisons:,} comparisons, {report.seconds:.1f} s",
        highlight=False,
    )
    table = Table("part", "frames", "materials", "leaked frames", "leaked materials")
    for part, counts in report.parts.items():
        table.add_row(
            part,
            f"{counts.n_frames:,}",
            f"{counts.n_materials:,}",
            f"{counts.n_leaked_frames:,}",
            f"{counts.n_leaked_materials:,}",
        )
    out.print(table)
    if report.pairs:
        pairs = Table("part", "material", "frame", "training material", "training frame", "formula")
        for pair in report.pairs[: show or None]:
            pairs.add_row(
                pair.part,
                pair.material,
                str(pair.frame_id),
                pair.train_material,
                str(pair.train_frame_id),
                pair.composition,
            )
        out.print(pairs)
        if show and len(report.pairs) > show:
            out.print(f"... {len(report.pairs) - show} more pairs (--show 0 for all)")
        out.print(f"[red]leak:[/] {len(report.pairs)} matching pairs", highlight=False)
    else:
        out.print("[green]no leak[/]: no validation/test structure matches training of another material")
    if json_out is not None:
        document = asdict(report)
        document["pairs"] = [asdict(p) for p in report.pairs]
        json_out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    if fail_on_leak and report.pairs:
        raise typer.Exit(ExitCode.CHECK_FAILED)


#: ``dataset list``: every field, and the columns of its table
_LIST_FIELDS = (
    "dataset",
    "id",
    "fidelities",
    "run",
    "frames",
    "materials",
    "elements",
    "splits",
    "content_hash",
)
_LIST_COLUMNS = (
    Column("dataset"),
    Column("id"),
    Column("fidelities", value=lambda r: ", ".join(r["fidelities"])),
    Column("run"),
    Column("frames", value=lambda r: f"{r['frames']:,}"),
    Column("materials", value=lambda r: f"{r['materials']:,}"),
    Column("elements"),
    Column("splits"),
    Column("content_hash", "content hash", value=lambda r: (r["content_hash"] or "")[:16]),
)


@app.command("list")
def list_command(fmt: Format = OutputFormat.table) -> None:
    """Every dataset version with its counts and hash."""
    from crossfid.curation.datasets import list_datasets

    engine = _engine()
    try:
        infos = list_datasets(engine)
    finally:
        engine.dispose()
    if not infos and fmt is OutputFormat.table:
        out.print("no datasets yet: `crossfid dataset freeze --run RUN --name NAME`")
        return
    rows = [
        (
            i.ref,
            i.id,
            list(i.fidelities),
            i.curation_run_id,
            i.n_frames,
            i.n_materials,
            i.n_elements,
            i.n_splits,
            i.content_hash,
        )
        for i in infos
    ]
    render(_LIST_FIELDS, rows, fmt, columns=_LIST_COLUMNS)


@app.command("show")
def show(dataset: Annotated[str, typer.Argument(help="NAME (latest version), NAME:VERSION or id.")]) -> None:
    """A dataset version: counts per fidelity, curation run, configuration hash, splits."""
    from crossfid.curation.split_store import show_dataset

    engine = _engine()
    try:
        detail = show_dataset(engine, dataset)
    finally:
        engine.dispose()
    info = detail.info
    out.print(f"dataset [bold]{info.ref}[/] (id {info.id})", highlight=False)
    line("created", info.created_at.isoformat(timespec="seconds") if info.created_at else "")
    line("frozen", "yes" if info.frozen else "no")
    line("curation run", f"{info.curation_run_id} ({detail.run_status}, dedupe {detail.run_dedupe})")
    line("frames", f"{info.n_frames:,}")
    line("materials", f"{info.n_materials:,}")
    line("elements", f"{info.n_elements} ({' '.join(info.elements)})")
    line("config hash", info.config_hash)
    line("content hash", info.content_hash)
    table = Table("fidelity", "frames", "materials", title="by fidelity")
    for name, (n_frames, n_materials) in detail.by_fidelity.items():
        table.add_row(name, f"{n_frames:,}", f"{n_materials:,}")
    out.print(table)
    if detail.splits:
        splits = Table("split", "strategy", "ratios", "seed", "frames train/val/test", "subsets", title="splits")
        for s in detail.splits:
            splits.add_row(
                str(s.id),
                s.strategy,
                s.ratio_text,
                str(s.seed),
                "/".join(f"{s.parts[p].n_frames:,}" for p in ("train", "val", "test")),
                ",".join(map(str, s.subsets)) or "-",
            )
        out.print(splits)


@app.command("verify")
def verify(
    dataset: Annotated[str, typer.Argument(help="NAME (latest version), NAME@VERSION, NAME:VERSION or id.")],
) -> None:
    """Recompute a frozen dataset's content hash, and its splits' and subsets', from the stored frames.

    Prints one OK or MISMATCH line per object; exits with status 4 when anything does not match.
    """
    from crossfid.curation.verify import verify_dataset

    engine = _engine()
    try:
        result = verify_dataset(engine, dataset)
    finally:
        engine.dispose()
    for check in result.checks:
        status = "[green]OK[/]" if check.ok else "[red]MISMATCH[/]"
        text = check.line().split(" ", 1)[1]
        out.print(f"{status} {escape(text)}", highlight=False, soft_wrap=True)
    n_failed = len(result.failed)
    if n_failed:
        out.print(
            f"[red]dataset {result.dataset}: {n_failed} of {len(result.checks)} objects do not match their stored "
            "hashes[/]",
            highlight=False,
        )
        raise typer.Exit(ExitCode.CHECK_FAILED)
    out.print(f"dataset {result.dataset}: all {len(result.checks)} objects match their stored hashes")


@app.command("export")
def export(
    split_ref: ExportArgument,
    directory: Annotated[Path, typer.Option("--out", "-o", help="Output directory.", file_okay=False)] = Path("."),
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", "-f", help="extxyz (MACE, NequIP), mptrj (CHGNet) or parquet (pandas, polars, HF)."),
    ] = ExportFormat.extxyz,
    part: Annotated[
        list[str] | None, typer.Option("--part", "-p", help="Parts to export (default train,val,test).")
    ] = None,
    subset: Annotated[int | None, typer.Option(help="Export the nested training subset of this size.")] = None,
    row_group_size: Annotated[
        int | None,
        typer.Option(help="Parquet: frames per row group (memory is bounded by one).", min=1),
    ] = None,
) -> None:
    """Write a split as extxyz or MPtrj-layout JSON (a file per part), or a split or dataset as one Parquet file.

    Every export of the same data is byte-identical. Parquet has one row per frame (a part column for splits),
    units in the schema and the dataset's hashes and provenance in the file metadata; see docs/export.md.
    """
    engine = _engine()
    try:
        if fmt is ExportFormat.parquet:
            from crossfid.curation.parquet import export_parquet

            sizing = {} if row_group_size is None else {"row_group_size": row_group_size}
            result = export_parquet(engine, split_ref, directory, values(part) or None, subset=subset, **sizing)
            size = result.path.stat().st_size
            out.print(
                f"wrote {result.path} ({result.n_frames:,} frames, {result.n_row_groups:,} row groups, {size:,} bytes)",
                highlight=False,
                soft_wrap=True,
            )
            return
        from crossfid.curation.export import export_split

        parts = values(part) or (["train"] if subset is not None else ["train", "val", "test"])
        paths = export_split(engine, split_ref, directory, fmt.value, parts, subset=subset)
    finally:
        engine.dispose()
    for path in paths:
        out.print(f"wrote {path} ({path.stat().st_size:,} bytes)", highlight=False, soft_wrap=True)

"""``crossfid dataset``: freeze curated frames into versions, split, audit for leaks, list, show, verify, export.

Errors are raised as exceptions; ``crossfid.cli.main`` prints them as one line.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crossfid.dbconnect import migrated_engine
from crossfid.exit_codes import ExitCode

dataset_app = typer.Typer(
    help="Immutable dataset versions, leak-free splits, leakage audits and exports (extxyz, MPtrj).",
    no_args_is_help=True,
)
console = Console()


class Strategy(StrEnum):
    material = "material"
    structure_group = "structure-group"


class ExportFormat(StrEnum):
    extxyz = "extxyz"
    mptrj = "mptrj"


class Representatives(StrEnum):
    final = "final"
    all = "all"


#: rich markup would read "[/STRATEGY]" as a closing tag: the brackets are escaped
SPLIT_HELP = "Split id or DATASET[:VERSION]\\[/STRATEGY]\\[@SEED]."


def _values(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


def _sizes(values: list[str] | None) -> list[int]:
    sizes = []
    for value in _values(values):
        if not value.isdigit():
            raise typer.BadParameter(f"subset size {value!r} is not a positive integer", param_hint="--subsets")
        sizes.append(int(value))
    return sizes


def _line(label: str, value: object) -> None:
    console.print(f"[bold]{label:<13}[/] {value}", highlight=False, soft_wrap=True)


@dataset_app.command("freeze")
def freeze(
    run: Annotated[int, typer.Option("--run", "-r", help="Curation run whose accepted frames become the dataset.")],
    name: Annotated[str, typer.Option("--name", "-n", help="Dataset name; the version is numbered automatically.")],
    fidelity: Annotated[
        list[str] | None, typer.Option("--fidelity", "-f", help="Only frames of these task fidelities.")
    ] = None,
) -> None:
    """Freeze the frames a curation run accepted as a new, immutable dataset version."""
    from crossfid.curation.datasets import freeze_dataset
    from crossfid.ingest.fidelity import fidelity_from_label

    fidelities = [fidelity_from_label(f) for f in _values(fidelity)] or None
    engine = migrated_engine()
    try:
        info = freeze_dataset(engine, run, name, fidelities)
    finally:
        engine.dispose()
    console.print(f"froze dataset [bold]{info.ref}[/] (id {info.id}) from curation run {run}", highlight=False)
    _line("fidelities", ", ".join(info.fidelities))
    _line("frames", f"{info.n_frames:,}")
    _line("materials", f"{info.n_materials:,}")
    _line("elements", f"{info.n_elements} ({' '.join(info.elements)})")
    _line("config hash", info.config_hash)
    _line("content hash", info.content_hash)
    if info.identical_to:
        console.print(f"[yellow]same content as {', '.join(info.identical_to)}[/]", highlight=False)


@dataset_app.command("split")
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
    from crossfid.curation.splits import create_split

    sizes = _sizes(subsets)
    engine = migrated_engine()
    try:
        info = create_split(engine, dataset, ratios, seed, strategy.value, sizes)
    finally:
        engine.dispose()
    verb = "created" if info.created else "exists:"
    console.print(
        f"{verb} split [bold]{info.id}[/] of {info.dataset} ({info.strategy}, {info.ratio_text}, seed {info.seed})",
        highlight=False,
    )
    _print_split(info)
    empty = [
        p for p, r in zip(("train", "val", "test"), info.ratios, strict=True) if r > 0 and not info.parts[p].n_frames
    ]
    if empty:
        console.print(f"[yellow]warning:[/] {', '.join(empty)} got no frames (too few groups for these ratios)")


def _print_split(info) -> None:
    table = Table("part", "frames", "materials", "fraction of frames")
    total = max(info.n_frames, 1)
    for part, counts in info.parts.items():
        table.add_row(part, f"{counts.n_frames:,}", f"{counts.n_materials:,}", f"{counts.n_frames / total:.3f}")
    console.print(table)
    for size, digest in info.subsets.items():
        _line(f"subset {size}", digest)
    _line("content hash", info.content_hash)


@dataset_app.command("audit")
def audit(
    split_ref: Annotated[str, typer.Argument(metavar="SPLIT", help=SPLIT_HELP)],
    ltol: Annotated[float, typer.Option(help="StructureMatcher fractional length tolerance.")] = 0.2,
    stol: Annotated[float, typer.Option(help="StructureMatcher site tolerance.")] = 0.3,
    angle_tol: Annotated[float, typer.Option(help="StructureMatcher angle tolerance (degrees).")] = 5.0,
    representatives: Annotated[
        Representatives, typer.Option(help="final: last frame of each task; all: every frame (slow).")
    ] = Representatives.final,
    workers: Annotated[int, typer.Option(help="Processes comparing structures (0: all cores for large audits).")] = 0,
    show: Annotated[int, typer.Option(help="Print at most this many pairs (0: all).")] = 50,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the full report as JSON here.")] = None,
    fail_on_leak: Annotated[bool, typer.Option(help="Exit with status 4 when a leak is found.")] = False,
) -> None:
    """Find validation/test frames whose structure matches a training frame of another material."""
    from dataclasses import asdict

    from crossfid.curation.audit import audit_split

    engine = migrated_engine()
    try:
        report = audit_split(
            engine,
            split_ref,
            ltol=ltol,
            stol=stol,
            angle_tol=angle_tol,
            representatives=representatives.value,
            workers=workers or None,
        )
    finally:
        engine.dispose()
    console.print(
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
    console.print(table)
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
        console.print(pairs)
        if show and len(report.pairs) > show:
            console.print(f"... {len(report.pairs) - show} more pairs (--show 0 for all)")
        console.print(f"[red]leak:[/] {len(report.pairs)} matching pairs", highlight=False)
    else:
        console.print("[green]no leak[/]: no validation/test structure matches training of another material")
    if json_out is not None:
        document = asdict(report)
        document["pairs"] = [asdict(p) for p in report.pairs]
        json_out.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    if fail_on_leak and report.pairs:
        raise typer.Exit(ExitCode.CHECK_FAILED)


@dataset_app.command("list")
def list_command() -> None:
    """Every dataset version with its counts and hash."""
    from crossfid.curation.datasets import list_datasets

    engine = migrated_engine()
    try:
        infos = list_datasets(engine)
    finally:
        engine.dispose()
    if not infos:
        console.print("no datasets yet: `crossfid dataset freeze --run RUN --name NAME`")
        return
    table = Table("dataset", "id", "fidelities", "run", "frames", "materials", "elements", "splits", "content hash")
    for info in infos:
        table.add_row(
            info.ref,
            str(info.id),
            ", ".join(info.fidelities),
            str(info.curation_run_id),
            f"{info.n_frames:,}",
            f"{info.n_materials:,}",
            str(info.n_elements),
            str(info.n_splits),
            (info.content_hash or "")[:16],
        )
    console.print(table)


@dataset_app.command("show")
def show(dataset: Annotated[str, typer.Argument(help="NAME (latest version), NAME:VERSION or id.")]) -> None:
    """A dataset version: counts per fidelity, curation run, configuration hash, splits."""
    from crossfid.curation.datasets import show_dataset

    engine = migrated_engine()
    try:
        detail = show_dataset(engine, dataset)
    finally:
        engine.dispose()
    info = detail.info
    console.print(f"dataset [bold]{info.ref}[/] (id {info.id})", highlight=False)
    _line("created", info.created_at.isoformat(timespec="seconds") if info.created_at else "")
    _line("frozen", "yes" if info.frozen else "no")
    _line("curation run", f"{info.curation_run_id} ({detail.run_status}, dedupe {detail.run_dedupe})")
    _line("frames", f"{info.n_frames:,}")
    _line("materials", f"{info.n_materials:,}")
    _line("elements", f"{info.n_elements} ({' '.join(info.elements)})")
    _line("config hash", info.config_hash)
    _line("content hash", info.content_hash)
    table = Table("fidelity", "frames", "materials", title="by fidelity")
    for fidelity, (n_frames, n_materials) in detail.by_fidelity.items():
        table.add_row(fidelity, f"{n_frames:,}", f"{n_materials:,}")
    console.print(table)
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
        console.print(splits)


@dataset_app.command("verify")
def verify(
    dataset: Annotated[str, typer.Argument(help="NAME (latest version), NAME@VERSION, NAME:VERSION or id.")],
) -> None:
    """Recompute a frozen dataset's content hash, and its splits' and subsets', from the stored frames.

    Prints one OK or MISMATCH line per object; exits with status 4 when anything does not match.
    """
    from crossfid.curation.verify import verify_dataset

    engine = migrated_engine()
    try:
        result = verify_dataset(engine, dataset)
    finally:
        engine.dispose()
    for check in result.checks:
        status = "[green]OK[/]" if check.ok else "[red]MISMATCH[/]"
        text = check.line().split(" ", 1)[1]
        console.print(f"{status} {escape(text)}", highlight=False, soft_wrap=True)
    n_failed = len(result.failed)
    if n_failed:
        console.print(
            f"[red]dataset {result.dataset}: {n_failed} of {len(result.checks)} objects do not match their stored "
            "hashes[/]",
            highlight=False,
        )
        raise typer.Exit(ExitCode.CHECK_FAILED)
    console.print(f"dataset {result.dataset}: all {len(result.checks)} objects match their stored hashes")


@dataset_app.command("export")
def export(
    split_ref: Annotated[str, typer.Argument(metavar="SPLIT", help=SPLIT_HELP)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.", file_okay=False)] = Path("."),
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="extxyz (MACE, NequIP) or mptrj (CHGNet).")] = (
        ExportFormat.extxyz
    ),
    part: Annotated[
        list[str] | None, typer.Option("--part", "-p", help="Parts to export (default train,val,test).")
    ] = None,
    subset: Annotated[int | None, typer.Option(help="Export the nested training subset of this size.")] = None,
) -> None:
    """Write each part of a split as extxyz or MPtrj-layout JSON (byte-identical on every export)."""
    from crossfid.curation.export import export_split

    parts = _values(part) or (["train"] if subset is not None else ["train", "val", "test"])
    engine = migrated_engine()
    try:
        paths = export_split(engine, split_ref, out, fmt.value, parts, subset=subset)
    finally:
        engine.dispose()
    for path in paths:
        console.print(f"wrote {path} ({path.stat().st_size:,} bytes)", highlight=False, soft_wrap=True)

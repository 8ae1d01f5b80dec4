"""``crossfid train``, ``crossfid runs`` and ``crossfid plots training``.

Errors are raised as exceptions; ``crossfid.cli.main`` prints them as one line.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from crossfid.dbconnect import migrated_engine

runs_app = typer.Typer(help="Training runs: list them, show one with its curve.", no_args_is_help=True)
plots_app = typer.Typer(help="Figures from stored results.", no_args_is_help=True)
console = Console()


class Method(StrEnum):
    scratch = "scratch"
    trainable = "tl-trainable-atomref"
    frozen = "tl-frozen-atomref"
    refit = "tl-refit-atomref"


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def train(
    split: Annotated[str | None, typer.Option(help="Split: id or DATASET[:VERSION]\\[/STRATEGY]\\[@SEED].")] = None,
    method: Annotated[Method | None, typer.Option(help="Transfer method (the study's 1-4).")] = None,
    base: Annotated[str, typer.Option(help="Base model: chgnet-0.3.0, chgnet-r2scan or a registered model.")] = (
        "chgnet-0.3.0"
    ),
    atomref: Annotated[
        str | None, typer.Option(help="Target AtomRef for scratch/tl-refit-atomref (default: the split's fit).")
    ] = None,
    train_size: Annotated[int | None, typer.Option(help="Train on the split's nested subset of this size.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 50).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 64).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Initial learning rate (default 1e-3).")] = None,
    final_learning_rate: Annotated[float | None, typer.Option(help="Learning rate at the end (default 1e-5).")] = None,
    targets: Annotated[str | None, typer.Option(help="Targets: e, ef, efs or efsm (default efsm).")] = None,
    weights: Annotated[
        str | None, typer.Option(help="Loss weights energy:force:stress:magmom (default 3:1:0.1:1).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of weights init and batch order (default 0).")] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda.")] = "auto",
    resume: Annotated[int | None, typer.Option("--resume", help="Continue run RUN from its last checkpoint.")] = None,
) -> None:
    """Fine-tune CHGNet on a split with one of the four transfer methods; every epoch is logged to the database."""
    from crossfid.training.hyperparameters import Hyperparameters
    from crossfid.training.runs import TrainRequest, resume_run, start_run

    engine = migrated_engine()
    try:
        if resume is not None:
            console.print(f"resuming run {resume}", highlight=False)
            summary = resume_run(engine, resume)
        else:
            if split is None or method is None:
                raise typer.BadParameter("give --split and --method (or --resume RUN)")
            overrides = {
                k: v
                for k, v in {
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "learning_rate": learning_rate,
                    "final_learning_rate": final_learning_rate,
                    "targets": targets,
                    "seed": seed,
                }.items()
                if v is not None
            }
            if weights:
                parts = [float(x) for x in weights.split(":")]
                if len(parts) != 4:
                    raise typer.BadParameter("--weights takes four numbers, e.g. 3:1:0.1:1")
                names = ("energy_weight", "force_weight", "stress_weight", "magmom_weight")
                overrides.update(zip(names, parts, strict=True))
            hp = Hyperparameters().with_overrides(**overrides)
            request = TrainRequest(
                split=split,
                method=method.value,
                base=base,
                atomref=atomref,
                train_size=train_size,
                hyperparameters=hp,
                device=device,
            )
            run_id = start_run(engine, request)
            console.print(f"training run [bold]{run_id}[/]: {method.value} from {base}", highlight=False)
            from crossfid.training.runs import run_training

            summary = run_training(engine, run_id)
    finally:
        engine.dispose()
    for warning in summary.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    cache = summary.graph_cache
    console.print(
        f"run {summary.run_id} {summary.status} after {summary.epochs_completed} epochs "
        f"(best epoch {summary.best_epoch}); graphs: {cache.get('hits', 0)} cached, {cache.get('misses', 0)} converted",
        highlight=False,
    )
    if summary.test_metrics:
        m = summary.test_metrics
        console.print(
            f"test MAE: energy {_fmt(m['energy_mae'])} meV/atom, force {_fmt(m['force_mae'])} meV/Å, "
            f"stress {_fmt(m['stress_mae'], 3)} GPa, magmom {_fmt(m['magmom_mae'], 3)} μB",
            highlight=False,
        )
    if summary.models:
        console.print("registered models: " + ", ".join(f"run-{summary.run_id}-{r}" for r in summary.models))


@runs_app.command("list")
def list_runs(
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
) -> None:
    """Training runs with their method, data, status and test MAEs (meV/atom, meV/Å, GPa, μB)."""
    from crossfid.db.engine import resolve_target
    from crossfid.db.readonly import run_read_only

    engine = migrated_engine()
    engine.dispose()
    result = run_read_only(
        resolve_target().libpq_url,
        "SELECT id, method, dataset, split_id, subset_size, base_model, atomref, status, epochs_completed, epochs, "
        "round(test_energy_mae::numeric, 1) AS test_e, round(test_force_mae::numeric, 1) AS test_f, "
        "round(test_stress_mae::numeric, 3) AS test_s, round(test_magmom_mae::numeric, 3) AS test_m "
        "FROM v_training_runs ORDER BY id",
        timeout_s=60,
    )
    if fmt == "json":
        print(json.dumps([dict(zip(result.columns, r, strict=True)) for r in result.rows], default=str, indent=1))
        return
    if fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout)
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return
    table = Table(title="training runs (--format json for all columns)")
    for name in ("id", "method", "epochs", "E", "F", "S", "M"):
        table.add_column(name, no_wrap=True, justify="right" if len(name) == 1 else "left")
    col = {name: i for i, name in enumerate(result.columns)}
    for row in result.rows:

        def cell(name: str, row=row) -> str:
            value = row[col[name]]
            return "" if value is None else str(value)

        table.add_row(
            cell("id"),
            cell("method"),
            f"{cell('epochs_completed')}/{cell('epochs')}"
            + ("" if cell("status") == "completed" else f" {cell('status')}"),
            cell("test_e"),
            cell("test_f"),
            cell("test_s"),
            cell("test_m"),
        )
    console.print(table)
    console.print("[dim]test MAEs of the best weights: E meV/atom, F meV/Å, S GPa, M μB[/]")


@runs_app.command("show")
def show_run(run: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """One run: its settings, and its curve epoch by epoch."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from crossfid.db.models import TrainingEpoch, TrainingRun

    engine = migrated_engine()
    try:
        with Session(engine) as session:
            row = session.get(TrainingRun, run)
            if row is None:
                raise ValueError(f"no training run {run}")
            epochs = session.scalars(
                select(TrainingEpoch).where(TrainingEpoch.run_id == run).order_by(TrainingEpoch.epoch)
            ).all()
            console.print(
                f"run [bold]{row.id}[/] {row.method} on split {row.split_id} "
                f"({row.n_train}/{row.n_val}/{row.n_test} frames), {row.status}, device {row.device}",
                highlight=False,
            )
            console.print(f"hyperparameters {json.dumps(row.hyperparameters)}", highlight=False, soft_wrap=True)
            for warning in row.warnings:
                console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
            table = Table("epoch", "train E", "val E", "train F", "val F", "val S", "val M", "lr", "s", title="MAEs")
            for e in epochs:
                table.add_row(
                    str(e.epoch),
                    _fmt(e.train_energy_mae),
                    _fmt(e.val_energy_mae),
                    _fmt(e.train_force_mae, 1),
                    _fmt(e.val_force_mae, 1),
                    _fmt(e.val_stress_mae, 3),
                    _fmt(e.val_magmom_mae, 3),
                    f"{e.learning_rate:.2e}",
                    f"{e.seconds:.1f}",
                )
            console.print(table)
            console.print("[dim]E meV/atom, F meV/Å, S GPa, M μB[/]")
            if row.test_metrics:
                console.print(f"test {json.dumps({k: v for k, v in row.test_metrics.items() if k != 'units'})}")
    finally:
        engine.dispose()


@plots_app.command("training")
def plot_training(
    runs: Annotated[list[int], typer.Argument(help="Run ids.")],
    out: Annotated[Path, typer.Option(help="Directory for the two figures.")] = Path("."),
) -> None:
    """Energy-MAE curves of several runs in one figure, and their first-epoch gradient ranges."""
    from crossfid.plots.training import plot_gradient_ranges, plot_training_curves
    from crossfid.training.history import load_histories

    engine = migrated_engine()
    try:
        histories = load_histories(engine, runs)
    finally:
        engine.dispose()
    label = "-".join(str(r) for r in runs)
    curves = plot_training_curves(out / f"training-curves-{label}.png", histories)
    gradients = plot_gradient_ranges(out / f"gradient-ranges-{label}.png", histories)
    console.print(f"wrote {curves}\nwrote {gradients}", highlight=False)

"""``crossfid train``, ``crossfid runs`` and ``crossfid plots training``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crossfid.cli.options import BASE_MODEL, SPLIT_HELP, Format
from crossfid.cli.render import Column, OutputFormat, Step, out, progress, render, text
from crossfid.training.hyperparameters import Hyperparameters
from crossfid.vocabulary import METHOD_NAMES

runs_app = typer.Typer(help="Training runs: list them, show one with its curve.", no_args_is_help=True)
plots_app = typer.Typer(help="Figures from stored results.", no_args_is_help=True)

#: the transfer methods as choices of ``--method``
Method = StrEnum("Method", {name: name for name in METHOD_NAMES})
#: the defaults every unset hyperparameter option takes
DEFAULTS = Hyperparameters()
_WEIGHTS = ("energy_weight", "force_weight", "stress_weight", "magmom_weight")


def _fmt(value, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _default(name: str) -> str:
    return f"{getattr(DEFAULTS, name):g}" if name != "targets" else DEFAULTS.targets


def epoch_reporter(step: Step):
    """An ``on_epoch`` callback of a training run that reports each finished epoch to ``step``:
    ``epoch 2/5 train e 12.3 meV/atom val e 15.1 meV/atom (41 s)``."""

    def report(result) -> None:
        parts = [
            f"{name} e {part.energy_mae:.1f} meV/atom"
            for name, part in (("train", result.train), ("val", result.val))
            if part is not None and part.energy_mae is not None
        ]
        step(result.epoch, detail=" ".join([*parts, f"({result.seconds:.0f} s)"]))

    return report


def train(
    split: Annotated[str | None, typer.Option(help=SPLIT_HELP)] = None,
    method: Annotated[Method | None, typer.Option(help="Transfer method (the study's 1-4).")] = None,
    base: Annotated[str, typer.Option(help="Base model: chgnet-0.3.0, chgnet-r2scan or a registered model.")] = (
        BASE_MODEL
    ),
    atomref: Annotated[
        str | None, typer.Option(help="Target AtomRef for scratch/tl-refit-atomref (default: the split's fit).")
    ] = None,
    train_size: Annotated[int | None, typer.Option(help="Train on the split's nested subset of this size.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs.", show_default=_default("epochs"))] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.", show_default=_default("batch_size"))] = None,
    learning_rate: Annotated[
        float | None, typer.Option(help="Initial learning rate.", show_default=_default("learning_rate"))
    ] = None,
    final_learning_rate: Annotated[
        float | None,
        typer.Option(help="Learning rate at the end.", show_default=_default("final_learning_rate")),
    ] = None,
    targets: Annotated[
        str | None, typer.Option(help="Targets: e, ef, efs or efsm.", show_default=_default("targets"))
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Loss weights energy:force:stress:magmom.", show_default=":".join(_default(w) for w in _WEIGHTS)
        ),
    ] = None,
    seed: Annotated[
        int | None, typer.Option(help="Seed of weights init and batch order.", show_default=_default("seed"))
    ] = None,
    device: Annotated[str, typer.Option(help="auto (GPU when present), cpu or cuda.")] = "auto",
    resume: Annotated[int | None, typer.Option("--resume", help="Continue run RUN from its last checkpoint.")] = None,
) -> None:
    """Fine-tune CHGNet on a split with one of the four transfer methods; every epoch is logged to the database."""
    from crossfid.runtime.database import engine as make_engine
    from crossfid.training.runs import TrainRequest, resume_run, run_training, start_run

    if resume is None and (split is None or method is None):
        raise typer.BadParameter("give --split and --method (or --resume RUN)")
    hp = None
    if resume is None:
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
            if len(parts) != len(_WEIGHTS):
                raise typer.BadParameter("--weights takes four numbers, e.g. 3:1:0.1:1")
            overrides.update(zip(_WEIGHTS, parts, strict=True))
        hp = DEFAULTS.with_overrides(**overrides)
    engine = make_engine()
    try:
        if resume is not None:
            out.print(f"resuming run {resume}", highlight=False)
            run_id, run_method, total = resume, *_method_and_epochs(engine, resume)
        else:
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
            run_method, total = method.value, hp.epochs
            out.print(f"training run [bold]{run_id}[/]: {method.value} from {base}", highlight=False)
        with progress() as steps:
            epochs_done = steps.step(f"train {run_method}", total, count="epoch {done}/{total}")
            report = epoch_reporter(epochs_done)
            if resume is not None:
                summary = resume_run(engine, run_id, on_epoch=report)
            else:
                summary = run_training(engine, run_id, on_epoch=report)
    finally:
        engine.dispose()
    for warning in summary.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    cache = summary.graph_cache
    out.print(
        f"run {summary.run_id} {summary.status} after {summary.epochs_completed} epochs "
        f"(best epoch {summary.best_epoch}); graphs: {cache.get('hits', 0)} cached, {cache.get('misses', 0)} converted",
        highlight=False,
    )
    if summary.test_metrics:
        m = summary.test_metrics
        out.print(
            f"test MAE: energy {_fmt(m['energy_mae'])} meV/atom, force {_fmt(m['force_mae'])} meV/Å, "
            f"stress {_fmt(m['stress_mae'], 3)} GPa, magmom {_fmt(m['magmom_mae'], 3)} μB",
            highlight=False,
        )
    if summary.models:
        out.print("registered models: " + ", ".join(f"run-{summary.run_id}-{r}" for r in summary.models))


def _method_and_epochs(engine, run_id: int) -> tuple[str, int]:
    """The method and the number of epochs of a stored run."""
    from sqlalchemy.orm import Session

    from crossfid.db.models import TrainingRun
    from crossfid.training.loop import TrainingError

    with Session(engine) as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise TrainingError(f"no training run {run_id}")
        return run.method, Hyperparameters.from_dict(run.hyperparameters).epochs


def _epochs_cell(r) -> str:
    done = f"{text(r['epochs_completed'])}/{text(r['epochs'])}"
    return done if r["status"] == "completed" else f"{done} {r['status']}"


_RUN_COLUMNS = (
    Column("id", no_wrap=True),
    Column("method", no_wrap=True),
    Column("epochs", no_wrap=True, value=_epochs_cell),
    Column("test_e", "E", justify="right", no_wrap=True),
    Column("test_f", "F", justify="right", no_wrap=True),
    Column("test_s", "S", justify="right", no_wrap=True),
    Column("test_m", "M", justify="right", no_wrap=True),
)


@runs_app.command("list")
def list_runs(fmt: Format = OutputFormat.table) -> None:
    """Training runs with their method, data, status and test MAEs (meV/atom, meV/Å, GPa, μB)."""
    from crossfid.runtime.database import engine as make_engine
    from crossfid.training.history import run_table

    engine = make_engine()
    try:
        fields, rows = run_table(engine)
    finally:
        engine.dispose()
    render(
        fields,
        rows,
        fmt,
        columns=_RUN_COLUMNS,
        title="training runs (--format json for all columns)",
        footer="[dim]test MAEs of the best weights: E meV/atom, F meV/Å, S GPa, M μB[/]",
    )


@runs_app.command("show")
def show_run(run: Annotated[int, typer.Argument(help="Run id.")]) -> None:
    """One run: its settings, and its curve epoch by epoch."""
    from crossfid.runtime.database import engine as make_engine
    from crossfid.training.history import load_run

    engine = make_engine()
    try:
        row, epochs = load_run(engine, run)
    finally:
        engine.dispose()
    out.print(
        f"run [bold]{row.id}[/] {row.method} on split {row.split_id} "
        f"({row.n_train}/{row.n_val}/{row.n_test} frames), {row.status}, device {row.device}",
        highlight=False,
    )
    out.print(f"hyperparameters {json.dumps(row.hyperparameters)}", highlight=False, soft_wrap=True)
    for warning in row.warnings:
        out.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
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
    out.print(table)
    out.print("[dim]E meV/atom, F meV/Å, S GPa, M μB[/]")
    if row.test_metrics:
        out.print(f"test {json.dumps({k: v for k, v in row.test_metrics.items() if k != 'units'})}")


@plots_app.command("training")
def plot_training(
    runs: Annotated[list[int], typer.Argument(help="Run ids.")],
    directory: Annotated[Path, typer.Option("--out", help="Directory for the two figures.")] = Path("."),
) -> None:
    """Energy-MAE curves of several runs in one figure, and their first-epoch gradient ranges."""
    from crossfid.plots.training import plot_gradient_ranges, plot_training_curves
    from crossfid.runtime.database import engine as make_engine
    from crossfid.training.history import load_histories

    engine = make_engine()
    try:
        histories = load_histories(engine, runs)
    finally:
        engine.dispose()
    label = "-".join(str(r) for r in runs)
    curves = plot_training_curves(directory / f"training-curves-{label}.png", histories)
    gradients = plot_gradient_ranges(directory / f"gradient-ranges-{label}.png", histories)
    out.print(f"wrote {curves}\nwrote {gradients}", highlight=False)

"""``crossfid benchmark``: benchmarks of training methods rather than models (the scaling law)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from crossfid.cli.leaderboard import number
from crossfid.cli.options import BASE_MODEL
from crossfid.cli.render import out, progress
from crossfid.training.hyperparameters import Hyperparameters

app = typer.Typer(help="Benchmarks of training methods rather than models: the scaling law.")

#: the study fits only training sizes above this many frames
MIN_FIT_SIZE = 1000


@app.command("scaling-law")
def scaling_law(
    split: Annotated[str, typer.Option(help="Split with nested training subsets (`dataset split --subsets`).")],
    method: Annotated[list[str], typer.Option("--method", "-m", help="Methods to compare (repeat).")],
    sizes: Annotated[str, typer.Option(help="Training sizes, comma-separated, e.g. 100,300,1000,3000.")],
    epochs: Annotated[int, typer.Option(help="Epochs per run.")] = Hyperparameters.epochs,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = Hyperparameters.batch_size,
    min_size: Annotated[int, typer.Option(help="Fit only sizes above this (the study's value).")] = MIN_FIT_SIZE,
    base: Annotated[str, typer.Option(help="Base model.")] = BASE_MODEL,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    figure: Annotated[Path | None, typer.Option("--out", help="Write the scaling-law figure here (PNG).")] = None,
) -> None:
    """Validation MAE against training size per method: log-log fits, R² and where the lines cross."""
    from crossfid.benchmarks.scaling_runs import fit_and_store, scaling_points
    from crossfid.cli.train import epoch_reporter
    from crossfid.runtime.database import engine as make_engine

    size_list = sorted({int(s) for s in sizes.split(",") if s.strip()})
    hp = Hyperparameters().with_overrides(epochs=epochs, batch_size=batch_size)
    engine = make_engine()
    try:
        with progress() as steps:

            def training(name: str, size: int, run_id: int):
                step = steps.step(f"scaling-law {name} n={size}", hp.epochs, count="epoch {done}/{total}")
                return epoch_reporter(step)

            points = scaling_points(engine, split, method, size_list, hp, base=base, device=device, training=training)
        result = fit_and_store(engine, split, points, min_size=min_size)
    finally:
        engine.dispose()
    table = Table("method", "size", "run", "val E meV/atom", "val F meV/Å", title="scaling points")
    for p in points:
        table.add_row(p.method, str(p.size), str(p.run_id), number(p.val_energy_mae), number(p.val_force_mae))
    out.print(table)
    for name, fits in result["fits"].items():
        for quantity, fit in fits.items():
            text_fit = (
                "too few sizes above --min-size"
                if fit is None
                else (f"slope {fit.slope:.3f}, intercept {fit.intercept:.3f}, R² {fit.r2:.3f} over {fit.n} sizes")
            )
            out.print(f"{name} {quantity}: {text_fit}", highlight=False, soft_wrap=True)
    for (a, b, quantity), cross in result["crossovers"].items():
        where = "no fit to compare" if cross is None else cross.describe()
        out.print(f"{a} vs {b} ({quantity}): {where}", highlight=False, soft_wrap=True)
    if figure is not None:
        from crossfid.plots.scaling import plot_scaling_law

        written = plot_scaling_law(figure, points, result["fits"], result["crossovers"])
        out.print(f"wrote {written}", highlight=False)

"""The report's figures as PNG files (each with the numbers it shows embedded, :mod:`crossfid.plots.pngdata`).

The study's figures come from :mod:`crossfid.plots` where it has them (training curves, gradient ranges,
energy scatter, element importance, density ratios, scaling law); the formation/decomposition parity of
several models in one figure is drawn here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crossfid.plots.pngdata import save_with_data, to_jsonable
from crossfid.report.study import ModelBenchmark, StudyReport

#: what each thermodynamic benchmark compares, for axis labels
QUANTITIES = {"formation-energy": "formation energy", "decomposition-energy": "decomposition energy"}


@dataclass(frozen=True)
class FigureFile:
    """A written figure: the report section it belongs to, its alt text (also its caption) and its file."""

    section: str
    alt: str
    path: Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.").lower() or "figure"


def plot_thermo_parity(path: str | Path, runs: Sequence[ModelBenchmark], *, quantity: str) -> Path:
    """Model vs DFT ``quantity`` (eV/atom) of the scored materials, one colour per model, y = x dashed; the
    legend gives each model's MAE (meV/atom) over the materials shown."""
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(label="parity")
    data = {"kind": "thermo_parity", "quantity": quantity, "models": {}}
    values = []
    for i, run in enumerate(runs):
        pairs = [(item, r["dft"], r["model"]) for item, r in run.items.items() if "dft" in r and "model" in r]
        if not pairs:
            continue
        items, dft, model = zip(*pairs, strict=True)
        x, y = np.asarray(dft, dtype=float), np.asarray(model, dtype=float)
        mae = float(1000 * np.mean(np.abs(y - x)))
        ax.scatter(x, y, s=14, alpha=0.7, color=f"C{i % 10}", label=f"{run.model.name} ({mae:.1f} meV/atom)")
        values += [*x, *y]
        data["models"][run.model.name] = {"items": list(items), "dft": x, "model": y, "mae_mev": mae}
    if not values:
        raise ValueError(f"no {quantity} pairs to plot")
    lo, hi = min(values), max(values)
    pad = 0.05 * (hi - lo) if hi > lo else 0.05
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1)
    ax.set_xlabel(f"DFT {quantity} (eV/atom)")
    ax.set_ylabel(f"model {quantity} (eV/atom)")
    ax.legend(fontsize="small")
    ax.grid(True, alpha=0.3)
    return save_with_data(fig, path, to_jsonable(data))


def write_figures(report: StudyReport, folder: Path) -> list[FigureFile]:
    """Every figure the report's data allow, written into ``folder``; sections without data have none."""
    from crossfid.plots.benchmarks import plot_density_ratios
    from crossfid.plots.energy_scatter import plot_energy_scatter
    from crossfid.plots.periodic_table import plot_element_importance
    from crossfid.plots.scaling import plot_scaling_law
    from crossfid.plots.training import plot_gradient_ranges, plot_training_curves

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    figures: list[FigureFile] = []

    def add(section: str, alt: str, path: Path) -> None:
        figures.append(FigureFile(section, alt, Path(path)))

    if report.histories:
        add(
            "training",
            "energy MAE per epoch of each method (validation solid, training dashed)",
            plot_training_curves(folder / "training-curves.png", report.histories),
        )
        if any(h.gradients for h in report.histories):
            with_gradients = [h for h in report.histories if h.gradients]
            add(
                "gradients",
                "first-epoch gradient ranges per layer and method",
                plot_gradient_ranges(folder / "gradient-ranges.png", with_gradients),
            )
    corr = report.correlation
    if corr is not None and corr.source_referenced:
        add(
            "correlation",
            f"raw vs referenced energies, {corr.source_label} vs {corr.target_label}",
            plot_energy_scatter(
                folder / "energy-scatter.png",
                source=corr.source_energy,
                target=corr.target_energy,
                source_referenced=corr.source_referenced,
                target_referenced=corr.target_referenced,
                source_label=corr.source_label,
                target_label=corr.target_label,
                material_ids=corr.material_ids,
                title=f"{corr.source_label} vs {corr.target_label}: {corr.n_materials} shared materials",
            ),
        )
    importance = report.importance
    if importance is not None:
        for variant, values in importance.variants.items():
            words = "MP2020 corrections" if variant == "mp2020" else "no corrections"
            title = f"{importance.source_label} − {importance.target_label} formation energy: element importance"
            add(
                "importance",
                f"element importance ({words})",
                plot_element_importance(folder / f"importance-{variant}.png", values, title=f"{title} ({words})"),
            )
    for run in report.benchmarks.get("density", []):
        ratios = [r["ratio"] for r in run.items.values() if "ratio" in r]
        if ratios:
            add(
                "density",
                f"density ratios: {run.model.name}",
                plot_density_ratios(
                    folder / f"density-{_slug(run.model.name)}.png",
                    ratios,
                    title=f"{run.model.name} (run {run.run_id})",
                ),
            )
    for name, quantity in QUANTITIES.items():
        runs = report.benchmarks.get(name, [])
        if any("dft" in r and "model" in r for run in runs for r in run.items.values()):
            add(name, f"{quantity} parity", plot_thermo_parity(folder / f"{name}-parity.png", runs, quantity=quantity))
    if report.scaling:
        points, fits = [], {}
        for method in report.scaling:
            points += [
                SimpleNamespace(method=method.method, size=size, val_energy_mae=energy, val_force_mae=force)
                for size, energy, force, _ in method.points
                if energy is not None
            ]
            energy = method.fits.get("energy")
            fits[method.method] = {"energy": None if energy is None else SimpleNamespace(**energy)}
        if points:
            add(
                "scaling-law",
                "scaling law: validation energy MAE vs training frames",
                plot_scaling_law(folder / "scaling-law.png", points, fits),
            )
    return figures

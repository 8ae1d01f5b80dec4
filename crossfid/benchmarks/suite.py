"""The study's benchmarks: what data each reads (and its hash), how it turns a model into metrics, its figures.

Each is a :class:`crossfid.benchmarks.registry.Benchmark` registered in
:data:`crossfid.benchmarks.registry.REGISTERED`: a ``name`` and a ``version``
(bumped when its definition changes, which makes every stored result of it
stale), its ``metrics`` (units, directions, leaderboard columns), ``prepare``
(read the benchmark data of a split, hash it) and ``run`` (model → metrics and items).
Relaxation-heavy benchmarks relax on Dask through :mod:`crossfid.benchmarks.relax_jobs`,
sharing relaxations of the same structure with the same model within one refresh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.benchmarks.registry import Benchmark, BenchmarkError, Context, MetricSpec, Options, Prepared
from crossfid.benchmarks.relax_jobs import RelaxSettings
from crossfid.benchmarks.store import ItemResult, Metric, latest_items
from crossfid.db.models import Dataset, ModelRow, Split
from crossfid.hashing import json_digest


def _split(session: Session, split_id: int) -> tuple[Split, Dataset]:
    split = session.get(Split, split_id)
    return split, session.get(Dataset, split.dataset_id)


# --------------------------------------------------------------------------- test-mae


class TestSetMae(Benchmark):
    """Energy, force, stress and magmom MAEs on the split's test frames, and energy MAE per element
    (``energy_mae:<element>``, meV/atom, not on the board)."""

    __test__ = False  # not a pytest test class
    name = "test-mae"
    version = 1
    metrics = (
        MetricSpec(
            "energy_mae",
            "meV/atom",
            column="test_energy_mae",
            ranked=True,
            scale=30.0,
            header="E",
            legend="test energy MAE",
            page=True,
        ),
        MetricSpec(
            "force_mae",
            "meV/Å",
            column="test_force_mae",
            ranked=True,
            scale=50.0,
            header="F",
            legend="test force MAE",
            page=True,
        ),
        MetricSpec("stress_mae", "GPa", column="test_stress_mae", page=True),
        MetricSpec("magmom_mae", "μB", column="test_magmom_mae"),
    )

    def prepare(self, session: Session, split_id: int) -> Prepared:
        from crossfid.training.data import load_split_frames

        split, dataset = _split(session, split_id)
        frames = load_split_frames(session, split_id, "test")
        if not frames:
            raise BenchmarkError(f"split {split_id} has no test frames")
        data = {"split_id": split_id, "dataset": f"{dataset.name}:{dataset.version}", "part": "test", "n": len(frames)}
        return Prepared(json_digest({"split": split.content_hash, "part": "test"}), data, frames)

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.testset_mae import testset_metrics

        return testset_metrics(prepared.payload, self.predictions(ctx, model, prepared))

    @staticmethod
    def predictions(ctx: Context, model: ModelRow, prepared: Prepared) -> list[dict[str, Any]]:
        """The model's predictions of the test frames (e eV/atom, f eV/Å, s GPa, m μB), computed once per refresh
        and shared by every benchmark on the same frames."""
        key = ("test-set predictions", model.sha256, prepared.data_hash)
        if key not in ctx.memo:
            from crossfid.potentials.base import load_potential
            from crossfid.runtime.paths import DataDirs
            from crossfid.training.graph_cache import GraphCache
            from crossfid.training.registry import model_spec

            potential = load_potential(model_spec(model))
            converter = potential.model.graph_converter
            graphs = GraphCache(DataDirs.from_settings().graph_cache, converter).graphs(prepared.payload)
            ctx.memo[key] = potential.predict_graphs(graphs)
        return ctx.memo[key]

    @classmethod
    def figures(cls, session: Session, model: ModelRow, folder: Path) -> dict[str, Path]:
        from crossfid.plots.benchmarks import plot_energy_parity

        items = latest_items(session, model.id, cls.name)
        pairs = [
            (i.result["energy_per_atom"], i.result["predicted_energy_per_atom"])
            for i in items
            if "energy_per_atom" in i.result
        ]
        if not pairs:
            return {}
        dft, pred = zip(*pairs, strict=True)
        path = plot_energy_parity(folder / f"{_slug(model)}-parity.png", dft, pred, title=model.name)
        return {"test-set energy parity": path}


def _slug(model: ModelRow) -> str:
    return model.name.replace("/", "_")


# --------------------------------------------------------------------------- shared by the thermodynamic benchmarks


@dataclass(frozen=True)
class Entry:
    """A DFT reference entry: material id, formula, energy per atom (eV/atom), relaxed structure."""

    material: str
    formula: str
    elements: tuple[str, ...]
    energy_per_atom: float
    structure: dict


_ENTRIES_SQL = text(
    """
    SELECT m.external_id, m.formula, m.elements, coalesce(r.corrected_energy_per_atom, r.energy_per_atom), r.structure
    FROM reference_entries r JOIN materials m ON m.id = r.material_id
    WHERE r.fidelity = ANY(:fidelities) AND r.structure IS NOT NULL
      AND (m.id IN (SELECT material_id FROM split_members WHERE split_id = :split AND part = ANY(:parts))
           OR m.n_elements = 1)
    ORDER BY m.external_id
    """
)


def load_entries(session: Session, split_id: int, parts: list[str]) -> list[Entry]:
    """Reference entries at the dataset's fidelities of the split parts' materials, plus every elemental entry."""
    _, dataset = _split(session, split_id)
    rows = session.execute(_ENTRIES_SQL, {"fidelities": list(dataset.fidelities), "split": split_id, "parts": parts})
    return [Entry(r[0], r[1], tuple(r[2]), float(r[3]), r[4]) for r in rows]


def entries_hash(entries: list[Entry]) -> str:
    return json_digest([[e.material, repr(e.energy_per_atom), json_digest(e.structure)] for e in entries])


def relaxed_energies(ctx: Context, model: ModelRow, entries: list[Entry], settings: RelaxSettings, label: str):
    """Model energies per atom after relaxing each entry's structure; failures by material with their reason."""
    results = ctx.relax(model, label, [(e.material, e.structure) for e in entries], settings)
    energies, failures = {}, {}
    for entry in entries:
        result = results[entry.material]
        if result.get("ok") and result.get("energy_per_atom") is not None:
            energies[entry.material] = float(result["energy_per_atom"])
        else:
            failures[entry.material] = result.get("failure") or "relaxation failed"
    return energies, failures, results


# --------------------------------------------------------------------------- formation energy


class _Relaxing(Benchmark):
    """A benchmark that relaxes structures: its relaxation settings are its parameters."""

    def __init__(self, settings: RelaxSettings | None = None) -> None:
        self.settings = settings or RelaxSettings()

    @classmethod
    def from_options(cls, options: Options) -> Benchmark:
        return cls(options.relax)

    def parameters(self) -> dict[str, Any]:
        return {"relax": self.settings.__dict__}


class FormationEnergy(_Relaxing):
    """Relax each test material and the elemental phases; formation energy vs the DFT one (MAE meV/atom)."""

    name = "formation-energy"
    version = 1
    metrics = (
        MetricSpec(
            "formation_mae",
            "meV/atom",
            column="formation_mae",
            ranked=True,
            scale=50.0,
            header="Ef",
            legend="formation energy MAE",
            page=True,
        ),
        MetricSpec("failed_relaxations", "count"),
    )

    def prepare(self, session: Session, split_id: int) -> Prepared:
        entries = load_entries(session, split_id, ["test"])
        split, dataset = _split(session, split_id)
        test = {r[0] for r in session.execute(_TEST_MATERIALS, {"split": split_id})}
        data = {"split_id": split_id, "dataset": f"{dataset.name}:{dataset.version}", "n_entries": len(entries)}
        return Prepared(entries_hash(entries), data, (entries, test))

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.thermo import elemental_minima, formation_energies_by_id, formation_energy_mae

        entries, test = prepared.payload
        energies, failures, _ = relaxed_energies(ctx, model, entries, self.settings, f"{self.name} {model.name}")
        formula = {e.material: e.formula for e in entries}
        dft_side = [(m, formula[m], e) for m, e in {e.material: e.energy_per_atom for e in entries}.items()]
        model_side = [(m, formula[m], energies.get(m, math.nan)) for m, _, _ in dft_side]
        referenced = set(elemental_minima(dft_side)) & set(elemental_minima(model_side))
        dft_by_id, model_by_id = formation_energies_by_id(dft_side), formation_energies_by_id(model_side)
        items, model_ef, dft_ef = [], [], []
        for entry in (e for e in entries if e.material in test):
            missing = [el for el in entry.elements if el not in referenced]
            if entry.material in failures:
                items.append(ItemResult(entry.material, False, failures[entry.material]))
                continue
            if missing:
                items.append(
                    ItemResult(entry.material, False, f"no relaxed elemental reference for {' '.join(missing)}")
                )
                continue
            dft, mod = dft_by_id[entry.material], model_by_id[entry.material]
            model_ef.append(mod)
            dft_ef.append(dft)
            items.append(ItemResult(entry.material, True, result={"model": mod, "dft": dft, "unit": "eV/atom"}))
        summary = formation_energy_mae(model_ef, dft_ef) if dft_ef else {"mae": None, "n": 0}
        metrics = [
            Metric("formation_mae", summary["mae"], "meV/atom", summary["n"]),
            Metric("failed_relaxations", float(len(failures)), "count", len(entries)),
        ]
        return metrics, items


_TEST_MATERIALS = text(
    "SELECT DISTINCT m.external_id FROM split_members sm JOIN materials m ON m.id = sm.material_id "
    "WHERE sm.split_id = :split AND sm.part = 'test'"
)


# --------------------------------------------------------------------------- decomposition energy


class DecompositionEnergy(_Relaxing):
    """Convex hulls from DFT and from model-relaxed energies: decomposition-energy MAE, stability F1, failures."""

    name = "decomposition-energy"
    version = 1
    metrics = (
        MetricSpec(
            "decomposition_mae",
            "meV/atom",
            column="decomposition_mae",
            ranked=True,
            scale=50.0,
            header="Ed",
            legend="decomposition energy MAE",
            page=True,
        ),
        MetricSpec("precision", "fraction", "higher"),
        MetricSpec("recall", "fraction", "higher"),
        MetricSpec(
            "f1",
            "fraction",
            "higher",
            column="decomposition_f1",
            header="F1",
            legend="of the stable/unstable classification",
            page=True,
        ),
        MetricSpec("failed_relaxations", "count", column="failed_relaxations"),
    )

    def prepare(self, session: Session, split_id: int) -> Prepared:
        entries = load_entries(session, split_id, ["train", "val", "test"])
        _, dataset = _split(session, split_id)
        data = {"split_id": split_id, "dataset": f"{dataset.name}:{dataset.version}", "n_entries": len(entries)}
        return Prepared(entries_hash(entries), data, entries)

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.thermo import decomposition_energies, decomposition_metrics

        entries = prepared.payload
        energies, failures, _ = relaxed_energies(ctx, model, entries, self.settings, f"{self.name} {model.name}")
        kept = [e for e in entries if e.material in energies]
        dft = decomposition_energies([(e.material, e.formula, e.energy_per_atom) for e in kept])
        mod = decomposition_energies([(e.material, e.formula, energies[e.material]) for e in kept])
        metrics_obj = decomposition_metrics(_finite(mod.values), _finite(dft.values))
        items = [ItemResult(m, False, reason) for m, reason in failures.items()]
        for entry in kept:
            d, m = dft.values.get(entry.material), mod.values.get(entry.material)
            if d is None or m is None or not (np.isfinite(d) and np.isfinite(m)):
                reason = dft.missing.get(entry.material) or mod.missing.get(entry.material) or "no decomposition energy"
                items.append(ItemResult(entry.material, False, reason))
            else:
                items.append(ItemResult(entry.material, True, result={"model": m, "dft": d, "unit": "eV/atom"}))
        summary = metrics_obj.to_dict()
        metrics = [
            Metric("decomposition_mae", summary["mae"], "meV/atom", summary["n"]),
            Metric("precision", summary["precision"], "fraction", summary["n"]),
            Metric("recall", summary["recall"], "fraction", summary["n"]),
            Metric("f1", summary["f1"], "fraction", summary["n"]),
            Metric("failed_relaxations", float(len(failures)), "count", len(entries)),
        ]
        return metrics, items


def _finite(values: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None and np.isfinite(v)}


# --------------------------------------------------------------------------- density


class Density(_Relaxing):
    """Bundled experimental crystals strained by −10 %, relaxed: density ratio experimental/predicted, MAE g/cm³."""

    name = "density"
    version = 1
    metrics = (
        MetricSpec(
            "density_mae",
            "g/cm³",
            column="density_mae",
            ranked=True,
            scale=0.3,
            header="ρ",
            legend="density MAE",
            page=True,
        ),
        MetricSpec("ratio_mean", "ratio", None, column="density_ratio_mean", page=True),
        MetricSpec("ratio_median", "ratio", None),
        MetricSpec("ratio_std", "ratio", None),
        MetricSpec("fraction_less_dense", "fraction", None, column="density_less_dense_fraction"),
        MetricSpec("failed_relaxations", "count"),
    )

    def __init__(self, settings: RelaxSettings | None = None, crystals: list[str] | None = None) -> None:
        super().__init__(settings)
        self.crystals = crystals

    @classmethod
    def from_options(cls, options: Options) -> Benchmark:
        return cls(options.relax, options.crystals)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "crystals": self.crystals}

    @classmethod
    def figures(cls, session: Session, model: ModelRow, folder: Path) -> dict[str, Path]:
        from crossfid.plots.benchmarks import plot_density_ratios

        ratios = [i.result["ratio"] for i in latest_items(session, model.id, cls.name) if "ratio" in i.result]
        if not ratios:
            return {}
        return {"density ratios": plot_density_ratios(folder / f"{_slug(model)}-density.png", ratios, title=model.name)}

    def prepare(self, session: Session, split_id: int) -> Prepared:
        from crossfid.benchmarks.density import load_crystals

        table = load_crystals()
        if self.crystals:
            unknown = sorted(set(self.crystals) - {c["id"] for c in table})
            if unknown:
                raise BenchmarkError(f"unknown crystals {', '.join(unknown)}")
            table = [c for c in table if c["id"] in set(self.crystals)]
        return Prepared(json_digest(table), {"crystals": len(table), "source": "crossfid/benchmarks/data"}, table)

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from pymatgen.core import Structure

        from crossfid.benchmarks.density import build_crystal, density_ratio_stats, experimental_density
        from crossfid.benchmarks.relax import strained

        table = prepared.payload
        structures = [(c["id"], strained(build_crystal(c), -0.10).as_dict()) for c in table]
        results = ctx.relax(model, f"{self.name} {model.name}", structures, self.settings)
        items, experimental, predicted = [], [], []
        for crystal in table:
            result = results[crystal["id"]]
            if not result.get("ok") or result.get("structure") is None:
                items.append(ItemResult(crystal["id"], False, result.get("failure") or "relaxation failed"))
                continue
            exp = experimental_density(crystal)
            pred = Structure.from_dict(result["structure"]).density
            experimental.append(exp)
            predicted.append(pred)
            items.append(
                ItemResult(crystal["id"], True, result={"experimental": exp, "predicted": pred, "ratio": exp / pred})
            )
        failed = sum(not i.ok for i in items)
        if not predicted:
            return [
                Metric("density_mae", None, "g/cm³", 0),
                Metric("failed_relaxations", failed, "count", len(table)),
            ], items
        stats = density_ratio_stats(experimental, predicted).to_dict()
        metrics = [
            Metric("density_mae", stats["mae"], "g/cm³", stats["n"]),
            Metric("ratio_mean", stats["mean"], "ratio", stats["n"]),
            Metric("ratio_median", stats["median"], "ratio", stats["n"]),
            Metric("ratio_std", stats["std"], "ratio", stats["n"]),
            Metric("fraction_less_dense", stats["fraction_less_dense"], "fraction", stats["n"]),
            Metric("failed_relaxations", float(failed), "count", len(table)),
        ]
        return metrics, items

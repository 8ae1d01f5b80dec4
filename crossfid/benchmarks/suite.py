"""The benchmarks: what data each reads (and its hash), and how it turns a model into metrics.

Each benchmark has a ``name`` and a ``version`` (bumped when its definition
changes, which makes every stored result of it stale), ``prepare`` (read the
benchmark data of a split, hash it) and ``run`` (model → metrics and items).
Relaxation-heavy benchmarks relax on Dask through :mod:`crossfid.benchmarks.relax_jobs`,
sharing relaxations of the same structure with the same model within one refresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.benchmarks.relax_jobs import ModelRef, RelaxSettings, relax_many
from crossfid.benchmarks.store import ItemResult, Metric, content_hash
from crossfid.db.models import Dataset, ModelRow, Split


class BenchmarkError(ValueError):
    """Benchmark data that cannot be prepared (e.g. a split without a test part)."""


@dataclass
class Context:
    """What a benchmark run may use: the engine, a Dask client, progress, and the refresh's relaxation cache."""

    engine: Any
    client: Any | None = None
    progress: Callable[[str, int, int], None] | None = None
    relaxations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def relax(self, model: ModelRow, label: str, structures: list[tuple[str, dict]], settings: RelaxSettings):
        """Relax structures with a model, reusing this refresh's earlier relaxations of the same items."""
        settings_key = content_hash(settings.__dict__)
        todo = [(i, s) for i, s in structures if (model.sha256, settings_key, i) not in self.relaxations]
        if todo:
            progress = None if self.progress is None else (lambda done, total: self.progress(label, done, total))
            done = relax_many(ModelRef.of(model), todo, settings, client=self.client, progress=progress)
            for item, result in done.items():
                self.relaxations[(model.sha256, settings_key, item)] = result
        return {i: self.relaxations[(model.sha256, settings_key, i)] for i, _ in structures}


@dataclass(frozen=True)
class Prepared:
    """Benchmark data of one split: its hash, a description, and what ``run`` needs."""

    data_hash: str
    data: dict[str, Any]
    payload: Any = None


def _split(session: Session, split_id: int) -> tuple[Split, Dataset]:
    split = session.get(Split, split_id)
    return split, session.get(Dataset, split.dataset_id)


# --------------------------------------------------------------------------- test-mae


class TestSetMae:
    """Energy, force, stress and magmom MAEs on the split's test frames, and energy MAE per element."""

    __test__ = False  # not a pytest test class
    name = "test-mae"
    version = 1

    def parameters(self) -> dict[str, Any]:
        return {}

    def prepare(self, session: Session, split_id: int) -> Prepared:
        from crossfid.training.data import load_split_frames

        split, dataset = _split(session, split_id)
        frames = load_split_frames(session, split_id, "test")
        if not frames:
            raise BenchmarkError(f"split {split_id} has no test frames")
        data = {"split_id": split_id, "dataset": f"{dataset.name}:{dataset.version}", "part": "test", "n": len(frames)}
        return Prepared(content_hash({"split": split.content_hash, "part": "test"}), data, frames)

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.testset_mae import predict, testset_metrics
        from crossfid.training.graph_cache import GraphCache, cache_root
        from crossfid.training.registry import load_registered_model

        net = load_registered_model(model)
        graphs = GraphCache(cache_root(), net.graph_converter).graphs(prepared.payload)
        return testset_metrics(prepared.payload, predict(net, graphs))


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
    return content_hash([[e.material, repr(e.energy_per_atom), content_hash(e.structure)] for e in entries])


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


class _Relaxing:
    """A benchmark that relaxes structures: its relaxation settings are its parameters."""

    def __init__(self, settings: RelaxSettings | None = None) -> None:
        self.settings = settings or RelaxSettings()

    def parameters(self) -> dict[str, Any]:
        return {"relax": self.settings.__dict__}


class FormationEnergy(_Relaxing):
    """Relax each test material and the elemental phases; formation energy vs the DFT one (MAE meV/atom)."""

    name = "formation-energy"
    version = 1

    def prepare(self, session: Session, split_id: int) -> Prepared:
        entries = load_entries(session, split_id, ["test"])
        split, dataset = _split(session, split_id)
        test = {r[0] for r in session.execute(_TEST_MATERIALS, {"split": split_id})}
        data = {"split_id": split_id, "dataset": f"{dataset.name}:{dataset.version}", "n_entries": len(entries)}
        return Prepared(entries_hash(entries), data, (entries, test))

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.thermo import formation_energy_mae

        entries, test = prepared.payload
        energies, failures, results = relaxed_energies(ctx, model, entries, self.settings, f"{self.name} {model.name}")
        elemental = [e for e in entries if len(e.elements) == 1]
        mu_dft = _elemental_minimum(elemental, {e.material: e.energy_per_atom for e in entries})
        mu_model = _elemental_minimum(elemental, energies)
        items, model_ef, dft_ef = [], [], []
        for entry in (e for e in entries if e.material in test):
            missing = [el for el in entry.elements if el not in mu_dft or el not in mu_model]
            if entry.material in failures:
                items.append(ItemResult(entry.material, False, failures[entry.material]))
                continue
            if missing:
                items.append(
                    ItemResult(entry.material, False, f"no relaxed elemental reference for {' '.join(missing)}")
                )
                continue
            fractions = _fractions(entry.formula)
            dft = entry.energy_per_atom - sum(x * mu_dft[el] for el, x in fractions.items())
            mod = energies[entry.material] - sum(x * mu_model[el] for el, x in fractions.items())
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


def _fractions(formula: str) -> dict[str, float]:
    from pymatgen.core import Composition

    composition = Composition(formula)
    return {el.symbol: composition.get_atomic_fraction(el) for el in composition.elements}


def _elemental_minimum(elemental: list[Entry], energies: dict[str, float]) -> dict[str, float]:
    """Lowest energy per atom of each element among its elemental entries that have an energy."""
    mu: dict[str, float] = {}
    for entry in elemental:
        if entry.material in energies:
            el = entry.elements[0]
            mu[el] = min(mu.get(el, np.inf), energies[entry.material])
    return mu


# --------------------------------------------------------------------------- decomposition energy


class DecompositionEnergy(_Relaxing):
    """Convex hulls from DFT and from model-relaxed energies: decomposition-energy MAE, stability F1, failures."""

    name = "decomposition-energy"
    version = 1

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

    def __init__(self, settings: RelaxSettings | None = None, crystals: list[str] | None = None) -> None:
        super().__init__(settings)
        self.crystals = crystals

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "crystals": self.crystals}

    def prepare(self, session: Session, split_id: int) -> Prepared:
        from crossfid.benchmarks.density import load_crystals

        table = load_crystals()
        if self.crystals:
            unknown = sorted(set(self.crystals) - {c["id"] for c in table})
            if unknown:
                raise BenchmarkError(f"unknown crystals {', '.join(unknown)}")
            table = [c for c in table if c["id"] in set(self.crystals)]
        return Prepared(content_hash(table), {"crystals": len(table), "source": "crossfid/benchmarks/data"}, table)

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


def default_benchmarks(relax: RelaxSettings | None = None, crystals: list[str] | None = None) -> dict[str, Any]:
    """The leaderboard's benchmarks, by name."""
    return {
        b.name: b
        for b in (
            TestSetMae(),
            FormationEnergy(relax),
            DecompositionEnergy(relax),
            Density(relax, crystals),
        )
    }

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

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.benchmarks.registry import Benchmark, BenchmarkError, Context, MetricSpec, Options, Prepared
from crossfid.benchmarks.relax_jobs import RelaxSettings
from crossfid.benchmarks.store import ItemResult, Metric, labellers, latest_items
from crossfid.db.models import Dataset, ModelRow, Split
from crossfid.hashing import json_digest

if TYPE_CHECKING:  # the science module imports scipy and pymatgen: loaded when a benchmark runs, not at import
    from crossfid.benchmarks.thermo import ModelScore, Truth


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
        labelled_by = labellers(session, split_id, dataset.fidelities, ["test"])
        return Prepared(json_digest({"split": split.content_hash, "part": "test"}), data, frames, labelled_by)

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.testset_mae import testset_metrics

        return testset_metrics(prepared.payload, self.predictions(ctx, model, prepared))

    @staticmethod
    def predictions(ctx: Context, model: ModelRow, prepared: Prepared) -> list[dict[str, Any]]:
        """The model's predictions of the test frames (:func:`frame_predictions`), shared by every benchmark on the
        same frames."""
        return frame_predictions(ctx, model, prepared.payload, prepared.data_hash)

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


def frame_predictions(ctx: Context, model: ModelRow, frames: list, data_hash: str) -> list[dict[str, Any]]:
    """A model's predictions of frames, computed once per refresh and data hash: ``e`` eV/atom, ``f`` eV/Å,
    ``s`` GPa (3×3), ``m`` μB or None when the model predicts no magnetic moments.

    A family that predicts cached graphs in batches (CHGNet's ``predict_graphs``) does so from the graph cache;
    any other predicts each frame's structure (:meth:`crossfid.potentials.base.Potential.predict`), with its raw
    energies: peers have no AtomRef to refit.
    """
    key = ("frame predictions", model.sha256, data_hash)
    if key not in ctx.memo:
        from crossfid.potentials.base import load_potential
        from crossfid.training.registry import model_spec

        potential = load_potential(model_spec(model))
        if hasattr(potential, "predict_graphs"):
            from crossfid.runtime.paths import DataDirs
            from crossfid.training.graph_cache import GraphCache

            converter = potential.model.graph_converter
            graphs = GraphCache(DataDirs.from_settings().graph_cache, converter).graphs(frames)
            ctx.memo[key] = potential.predict_graphs(graphs)
        else:
            predicted = potential.predict([frame.structure() for frame in frames])
            ctx.memo[key] = [_prediction_dict(p) for p in predicted]
    return ctx.memo[key]


def _prediction_dict(prediction: Any) -> dict[str, Any]:
    magmoms = prediction.magmoms
    has_magmoms = magmoms is not None and np.size(magmoms) > 0 and np.isfinite(magmoms).all()
    return {
        "e": np.asarray(prediction.energy, dtype=float),
        "f": np.asarray(prediction.forces, dtype=float),
        "s": np.asarray(prediction.stress, dtype=float),
        "m": np.asarray(magmoms, dtype=float) if has_magmoms else None,
    }


# --------------------------------------------------------------------------- shared by the thermodynamic benchmarks


@dataclass(frozen=True)
class Entry:
    """A DFT reference entry: material id, formula, energy per atom (eV/atom), relaxed structure."""

    material: str
    formula: str
    elements: tuple[str, ...]
    energy_per_atom: float
    structure: dict
    energy_quantity: str | None = None  # which VASP energy (reference_entries.energy_quantity), None if not recorded


#: one entry per material at the dataset's fidelities (the first listed fidelity it has), with a structure
_ENTRIES_SQL = text(
    """
    SELECT DISTINCT ON (m.id) m.external_id, m.formula, m.elements, r.energy_per_atom, r.corrected_energy_per_atom,
           r.structure, r.energy_quantity
    FROM reference_entries r JOIN materials m ON m.id = r.material_id
    WHERE r.fidelity = ANY(:fidelities) AND r.structure IS NOT NULL
    ORDER BY m.id, array_position(CAST(:fidelities AS text[]), r.fidelity)
    """
)

_SPLIT_MATERIALS = text(
    "SELECT DISTINCT m.external_id, sm.part FROM split_members sm JOIN materials m ON m.id = sm.material_id "
    "WHERE sm.split_id = :split"
)


def _entry_energy(energy_label: str | None, uncorrected: float, corrected: float | None) -> float:
    """The entry's energy per atom on the dataset's training energy: uncorrected, or MP2020-corrected where the
    source stored a correction (an entry without one had none to apply); NULL label (legacy): the same."""
    if energy_label == "uncorrected" or corrected is None:
        return float(uncorrected)
    return float(corrected)


def load_entries(session: Session, split_id: int) -> list[Entry]:
    """Every reference entry with a structure at the split's dataset fidelities (one per material, whatever split
    part, in or out of the dataset), its energy on the dataset's energy label (eV/atom), sorted by material id."""
    _, dataset = _split(session, split_id)
    rows = session.execute(_ENTRIES_SQL, {"fidelities": list(dataset.fidelities)})
    entries = [
        Entry(r[0], r[1], tuple(r[2]), _entry_energy(dataset.energy_label, r[3], r[4]), r[5], r[6]) for r in rows
    ]
    return sorted(entries, key=lambda e: e.material)


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


class _Relaxing(Benchmark):
    """A benchmark that relaxes structures: its relaxation settings are its parameters."""

    def __init__(self, settings: RelaxSettings | None = None) -> None:
        self.settings = settings or RelaxSettings()

    @classmethod
    def from_options(cls, options: Options) -> Benchmark:
        return cls(options.relax)

    def parameters(self) -> dict[str, Any]:
        return {"relax": self.settings.__dict__}


@dataclass(frozen=True)
class ThermoData:
    """What a thermodynamic benchmark scores: the fidelity's entries, the scored set, the DFT truth on it (computed
    once from the entries alone, before any model) and the entries to relax (those the scored set needs)."""

    entries: list[Entry]
    truth: Truth
    relax: list[Entry]


class _Thermodynamic(_Relaxing):
    """Formation or decomposition energy, model vs DFT, on a scored set of materials (``scored``: test or all).

    Prepare: the DFT truth of the scored set from every entry of the dataset's fidelities, whatever split part
    (:func:`crossfid.benchmarks.thermo.formation_truth` / ``decomposition_truth``). Run: relax the entries the
    scored set needs with the model and score it; a model's failures are counted (``failed_scored``,
    ``failed_share``), never a change to the truth. An empty benchmark (no entry with a structure, no scored
    material with an entry, no elemental entry, no DFT value at all) is a :class:`BenchmarkError` naming what
    is missing.
    """

    quantity: str
    default_scored: str

    def __init__(self, settings: RelaxSettings | None = None, scored: str | None = None) -> None:
        from crossfid.benchmarks.thermo import SCORED_SETS

        super().__init__(settings)
        self.scored = scored or self.default_scored
        if self.scored not in SCORED_SETS:
            raise BenchmarkError(f"unknown scored set {self.scored!r} for {self.name}: one of {', '.join(SCORED_SETS)}")

    @classmethod
    def from_options(cls, options: Options) -> Benchmark:
        # Options.scored (benchmark name → "test"/"all") is set by the command line when it offers the choice
        chosen = (getattr(options, "scored", None) or {}).get(cls.name)
        return cls(options.relax, chosen)

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "scored": self.scored}

    def _truth(self, entries: list[tuple[str, str, float]], scored: list[str]) -> Truth:
        raise NotImplementedError

    def _score(
        self, entries: list[tuple[str, str, float]], energies: dict[str, float], failures: dict[str, str], truth: Truth
    ) -> ModelScore:
        raise NotImplementedError

    def prepare(self, session: Session, split_id: int) -> Prepared:
        from crossfid.benchmarks.thermo import needed_entries

        _, dataset = _split(session, split_id)
        fidelity = "/".join(dataset.fidelities)
        entries = load_entries(session, split_id)
        if not entries:
            raise BenchmarkError(
                f"{self.name}: no reference entry with a structure at {fidelity} (the fidelity of dataset "
                f"{dataset.name}:{dataset.version}): there is nothing to relax"
            )
        members = session.execute(_SPLIT_MATERIALS, {"split": split_id}).all()
        known = {e.material for e in entries}
        if self.scored == "test":
            scored = sorted({m for m, part in members if part == "test"})
            if not scored or not known & set(scored):
                raise BenchmarkError(
                    f"{self.name}: none of the {len(scored)} test materials of split {split_id} has a reference "
                    f"entry with a structure at {fidelity}"
                )
        else:
            scored = sorted(known | {m for m, _ in members})
        if not any(len(e.elements) == 1 for e in entries):
            raise BenchmarkError(
                f"{self.name}: no elemental reference entry at {fidelity} (a single-element material with a "
                "structure): formation and decomposition energies need each element's reference state"
            )
        triples = [(e.material, e.formula, e.energy_per_atom) for e in entries]
        truth = self._truth(triples, scored)
        if not truth.values:
            lacking = truth.missing_elements()
            why = f"no elemental reference entry for {', '.join(lacking)}" if lacking else "see the reasons per item"
            raise BenchmarkError(
                f"{self.name}: none of the {len(scored)} scored materials ({self.scored}) has a DFT "
                f"{truth.quantity} at {fidelity}: {why}"
            )
        needed = set(needed_entries(triples, truth.values))
        data = {
            "split_id": split_id,
            "dataset": f"{dataset.name}:{dataset.version}",
            "fidelities": list(dataset.fidelities),
            "energy_label": dataset.energy_label,
            "scored": self.scored,
            "n_entries": len(entries),
            "n_scored": len(scored),
            "n_with_dft_value": len(truth.values),
            "n_without_dft_value": truth.n_missing,
            "elements_without_elemental_entry": truth.missing_elements(),
            "n_relaxed": len(needed),
            "energy_quantities": dict(Counter(e.energy_quantity or "not recorded" for e in entries)),
        }
        data_hash = json_digest(
            {
                "entries": entries_hash(entries),
                "scored": scored,
                "fidelities": list(dataset.fidelities),
                "energy_label": dataset.energy_label,
            }
        )
        labelled_by = labellers(session, split_id, dataset.fidelities, ["train", "val", "test"])
        payload = ThermoData(entries, truth, [e for e in entries if e.material in needed])
        return Prepared(data_hash, data, payload, labelled_by)

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        payload: ThermoData = prepared.payload
        truth = payload.truth
        energies, failures, _ = relaxed_energies(ctx, model, payload.relax, self.settings, f"{self.name} {model.name}")
        triples = [(e.material, e.formula, e.energy_per_atom) for e in payload.relax]
        score = self._score(triples, energies, failures, truth)
        items = []
        for material in truth.scored:
            if material in truth.missing:
                items.append(ItemResult(material, False, f"no DFT value: {truth.missing[material]}", {"cause": "data"}))
            elif material in score.failures:
                dft = truth.values[material]
                items.append(ItemResult(material, False, score.failures[material], {"cause": "model", "dft": dft}))
            else:
                result = {"model": score.values[material], "dft": truth.values[material], "unit": "eV/atom"}
                items.append(ItemResult(material, True, result=result))
        scored = set(truth.scored)
        for material, reason in sorted(failures.items()):
            if material not in scored:  # relaxed for the hull or as an elemental reference only
                items.append(ItemResult(material, False, reason, {"cause": "model", "scored": False}))
        metrics = self._metrics(score)
        metrics += [
            Metric("failed_relaxations", float(len(failures)), "count", len(payload.relax)),
            Metric("failed_scored", float(len(score.failures)), "count", score.n_scored),
            Metric("failed_share", _finite_or_none(score.failed_share), "fraction", score.n_scored),
            Metric("no_dft_value", float(truth.n_missing), "count", len(truth.scored)),
        ]
        return metrics, items

    def _metrics(self, score: ModelScore) -> list[Metric]:
        raise NotImplementedError


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


#: metrics both thermodynamic benchmarks report beside their errors (not on the board)
_FAILURE_METRICS = (
    MetricSpec("failed_scored", "count"),
    MetricSpec("failed_share", "fraction"),
    MetricSpec("no_dft_value", "count", None),
)


# --------------------------------------------------------------------------- formation energy


class FormationEnergy(_Thermodynamic):
    """Formation energy vs the DFT one (MAE meV/atom), scored by default on ALL materials of the fidelity (the
    study's 34,938 r2SCAN materials), each against its elements' reference states (elemental entries)."""

    name = "formation-energy"
    version = 2
    quantity = "formation energy"
    default_scored = "all"
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
        *_FAILURE_METRICS,
    )

    def _truth(self, entries, scored):
        from crossfid.benchmarks.thermo import formation_truth

        return formation_truth(entries, scored)

    def _score(self, entries, energies, failures, truth):
        from crossfid.benchmarks.thermo import score_formation

        return score_formation(entries, energies, failures, truth)

    def _metrics(self, score) -> list[Metric]:
        from crossfid.benchmarks.thermo import formation_energy_mae

        summary = formation_energy_mae(score.values, {k: score.truth.values[k] for k in score.values})
        return [Metric("formation_mae", summary["mae"], "meV/atom", summary["n"])]


# --------------------------------------------------------------------------- decomposition energy


class DecompositionEnergy(_Thermodynamic):
    """Convex hulls from ALL entries of the fidelity (DFT, and the model's relaxed energies), decomposition-energy
    MAE and stability F1 scored by default on the split's TEST materials (the study's 23.66 meV/atom)."""

    name = "decomposition-energy"
    version = 2
    quantity = "decomposition energy"
    default_scored = "test"
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
        *_FAILURE_METRICS,
    )

    def _truth(self, entries, scored):
        from crossfid.benchmarks.thermo import decomposition_truth

        return decomposition_truth(entries, scored)

    def _score(self, entries, energies, failures, truth):
        from crossfid.benchmarks.thermo import score_decomposition

        return score_decomposition(entries, energies, failures, truth)

    def _metrics(self, score) -> list[Metric]:
        from crossfid.benchmarks.thermo import decomposition_metrics

        summary = decomposition_metrics(score.values, {k: score.truth.values[k] for k in score.values}).to_dict()
        return [
            Metric("decomposition_mae", summary["mae"], "meV/atom", summary["n"]),
            Metric("precision", summary["precision"], "fraction", summary["n"]),
            Metric("recall", summary["recall"], "fraction", summary["n"]),
            Metric("f1", summary["f1"], "fraction", summary["n"]),
        ]


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

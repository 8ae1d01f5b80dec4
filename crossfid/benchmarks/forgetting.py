"""The forgetting benchmark: how much of the source fidelity a model keeps after fine-tuning to the target one.

Every model on the board predicts the *source* fidelity's test frames (default GGA and GGA+U): the frames
of the split's test materials at the source fidelities, those accepted by the newest completed curation
run that decided on them (all of them when no curation run did). Force and stress MAEs are as in
``test-mae``; the energy MAE is taken after referencing: a per-element linear offset (eV/atom, fitted by
least squares on these frames, :func:`crossfid.referencing.atomref.fit_atomref`) is added to the model's
energies first, so a model that only moved its energy zero per element (as a refitted AtomRef does) has
not forgotten anything by this measure. The raw energy MAE is stored too (``raw_energy_mae``, not on the
board). Fidelities of the split's own dataset are never a source (that would be the test set itself). A split
without source frames (a single-fidelity corpus) is :class:`~crossfid.benchmarks.registry.NotApplicable`: a
refresh skips the benchmark and says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from crossfid.benchmarks.registry import Benchmark, Context, MetricSpec, NotApplicable, Options, Prepared
from crossfid.benchmarks.store import ItemResult, Metric, labellers
from crossfid.benchmarks.suite import frame_predictions
from crossfid.curation.datasets import training_energy_sql
from crossfid.db.models import Dataset, ModelRow, Split
from crossfid.hashing import json_digest
from crossfid.training.data import LabelledFrame

#: the source fidelities unless told otherwise: what the shipped base models were trained on
DEFAULT_SOURCE: tuple[str, ...] = ("GGA", "GGA+U")

_SOURCE_FRAMES_SQL = """
WITH candidate AS (
    SELECT f.id FROM frames f JOIN tasks t ON t.id = f.task_id
     WHERE t.fidelity = ANY(:source)
       AND t.material_id IN (SELECT material_id FROM split_members WHERE split_id = :split AND part = 'test')
), curation AS (
    SELECT max(d.run_id) AS run_id FROM frame_decisions d JOIN curation_runs c ON c.id = d.run_id
     WHERE c.status = 'completed' AND d.frame_id IN (SELECT id FROM candidate)
)
SELECT f.id, f.content_hash, m.external_id, f.n_atoms, f.lattice, f.atomic_numbers, f.frac_coords,
       {energy} / f.n_atoms AS energy_per_atom, f.forces, f.stress, f.magmoms, (SELECT run_id FROM curation)
  FROM frames f JOIN tasks t ON t.id = f.task_id JOIN materials m ON m.id = t.material_id
 WHERE f.id IN (SELECT id FROM candidate)
   AND ((SELECT run_id FROM curation) IS NULL
        OR EXISTS (SELECT 1 FROM frame_decisions d
                    WHERE d.run_id = (SELECT run_id FROM curation) AND d.frame_id = f.id AND d.accepted))
 ORDER BY f.content_hash COLLATE "C", f.id
"""


def source_frames(session: Session, split_id: int, source: Sequence[str]) -> tuple[list[LabelledFrame], int | None]:
    """The source test set (see the module) with energies on the split's dataset energy label, and the curation
    run that chose the frames (None: no curation run decided on them, every frame is used)."""
    dataset = session.get(Dataset, session.get(Split, split_id).dataset_id)
    sql = _SOURCE_FRAMES_SQL.format(energy=training_energy_sql(dataset.energy_label))
    rows = session.execute(text(sql), {"source": list(source), "split": split_id}).all()
    frames = [
        LabelledFrame(
            frame_id=r[0],
            content_hash=r[1],
            material=r[2],
            lattice=np.reshape(r[4], (3, 3)),
            atomic_numbers=np.asarray(r[5], dtype=np.int64),
            frac_coords=np.reshape(r[6], (r[3], 3)),
            energy_per_atom=r[7],
            forces=None if r[8] is None else np.reshape(r[8], (r[3], 3)),
            stress=None if r[9] is None else np.reshape(r[9], (3, 3)),
            magmoms=r[10],
        )
        for r in rows
    ]
    return frames, (rows[0][11] if rows else None)


def referenced_energy_errors(
    frames: Sequence[LabelledFrame], predicted: Sequence[float]
) -> tuple[np.ndarray, dict[str, float]]:
    """|DFT − (model + per-element offset)| per frame (eV/atom; NaN for a frame without an energy) and the
    offsets by element (eV/atom), fitted by least squares to DFT − model on the frames with an energy."""
    from crossfid.referencing.atomref import fit_atomref, values_by_element
    from crossfid.referencing.composition import composition_matrix

    dft = np.array([f.energy_per_atom for f in frames], dtype=float)
    model = np.asarray(predicted, dtype=float)
    composition = composition_matrix([f.atomic_numbers.tolist() for f in frames])
    usable = np.isfinite(dft) & np.isfinite(model)
    if not usable.any():
        return np.full(len(frames), np.nan), {}
    fit = fit_atomref(composition[usable], (dft - model)[usable])
    offsets = np.nan_to_num(fit.values, nan=0.0)
    errors = np.abs(dft - model - composition @ offsets)
    return errors, {el: v for el, v in values_by_element(fit.values).items() if v is not None}


class Forgetting(Benchmark):
    """Errors on the source fidelity's test frames: referenced energy, force and stress MAE (see the module)."""

    name = "forgetting"
    version = 1
    metrics = (
        MetricSpec(
            "energy_mae",
            "meV/atom",
            column="forgetting_energy_mae",
            legend="source-fidelity test energy MAE after per-element referencing",
            page=True,
        ),
        MetricSpec(
            "force_mae",
            "meV/Å",
            column="forgetting_force_mae",
            header="Fsrc",
            legend="source-fidelity test force MAE (forgetting)",
            page=True,
        ),
        MetricSpec("stress_mae", "GPa", column="forgetting_stress_mae", page=True),
        MetricSpec("raw_energy_mae", "meV/atom"),
    )

    def __init__(self, source: Sequence[str] | None = None) -> None:
        self.source = list(source or DEFAULT_SOURCE)

    @classmethod
    def from_options(cls, options: Options) -> Benchmark:
        return cls(options.source_fidelities)

    def parameters(self) -> dict[str, Any]:
        return {"source_fidelities": self.source}

    def prepare(self, session: Session, split_id: int) -> Prepared:
        split = session.get(Split, split_id)
        dataset = session.get(Dataset, split.dataset_id)
        source = [f for f in self.source if f not in dataset.fidelities]
        if not source:
            raise NotApplicable(
                f"{self.name}: the source fidelities {', '.join(self.source)} are the fidelities of dataset "
                f"{dataset.name}:{dataset.version} itself; choose others (--source-fidelity)"
            )
        frames, curation_run = source_frames(session, split_id, source)
        if not frames:
            raise NotApplicable(
                f"{self.name}: none of the test materials of split {split_id} has frames at {', '.join(source)}"
            )
        data = {
            "split_id": split_id,
            "dataset": f"{dataset.name}:{dataset.version}",
            "source_fidelities": source,
            "energy_label": dataset.energy_label,
            "curation_run": curation_run,
            "n": len(frames),
            "n_materials": len({f.material for f in frames}),
        }
        data_hash = json_digest(
            {"frames": [[f.content_hash, repr(f.energy_per_atom)] for f in frames], "source": source}
        )
        return Prepared(data_hash, data, frames, labellers(session, split_id, source, ["test"]))

    def run(self, ctx: Context, model: ModelRow, prepared: Prepared) -> tuple[list[Metric], list[ItemResult]]:
        from crossfid.benchmarks.testset_mae import testset_metrics

        frames: list[LabelledFrame] = prepared.payload
        predictions = frame_predictions(ctx, model, frames, prepared.data_hash)
        measured, items = testset_metrics(frames, predictions)
        by_name = {m.name: m for m in measured}
        errors, offsets = referenced_energy_errors(frames, [float(p["e"]) for p in predictions])
        finite = errors[np.isfinite(errors)]
        raw = by_name["energy_mae"]
        metrics = [
            Metric("energy_mae", float(1000 * finite.mean()) if finite.size else None, "meV/atom", int(finite.size)),
            by_name["force_mae"],
            by_name["stress_mae"],
            Metric("raw_energy_mae", raw.value, raw.unit, raw.n),
        ]
        metrics += [Metric(f"offset:{el}", value, "eV/atom", int(finite.size)) for el, value in offsets.items()]
        items = [
            ItemResult(
                i.item,
                i.ok,
                i.failure,
                {**i.result, "referenced_energy_error": None if not np.isfinite(e) else float(1000 * e)},
            )
            for i, e in zip(items, errors, strict=True)
        ]
        return metrics, items

"""Curation on Dask: partitions of materials, read from and written back to PostgreSQL.

A curation run applies the rules of :mod:`crossfid.curation.rules` to every frame of
the selected materials at the run's fidelities and stores one ``frame_decisions`` row
per frame. The unit of work is a *partition*: a few materials (small ones batched
together up to about :data:`PARTITION_FRAMES` frames). A worker reads its
partition's tasks, frames and primary entries, decides, and writes all its decisions
in one transaction with ``ON CONFLICT DO NOTHING``. The decisions are a pure function
of the data and the configuration, so

* a partition that is run twice (a worker died after committing, Dask retried it)
  writes the same rows, which the second time are already there;
* the result depends neither on the number of workers nor on the order in which
  partitions finish.

Per material, all tasks at the run's fidelities are curated together against one
primary entry (so that GGA and GGA+U are curated together, MPtrj style, with the
Hubbard-consistency rule deciding between them). When the material has entries at
several of the run's fidelities, the primary one is the entry of the fidelity with
the most frames of that material (ties: the order of the run's fidelities).
Tasks are walked in the order of their source name and external id, frames by ionic
step: both are independent of database ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, insert, text, update

import crossfid
from crossfid.curation.config import CurationConfig
from crossfid.curation.decisions import FrameView
from crossfid.curation.dedupe import DedupeStats
from crossfid.curation.rules import ReferenceView, TaskView, curate_material, nelm_from_input_parameters
from crossfid.db.bulk import copy_insert
from crossfid.db.models import CurationRun
from crossfid.ingest.records import jsonable

log = logging.getLogger(__name__)

#: target size of a partition in frames (materials are never split)
PARTITION_FRAMES = 400


@dataclass
class PartitionResult:
    """What one partition did (returned by the worker)."""

    materials: int = 0
    frames: int = 0
    accepted: int = 0
    written: int = 0  # decision rows new in the database (0 when a retry found them all)
    dedupe: dict[str, Any] = field(default_factory=dict)


@dataclass
class CurationSummary:
    run_id: int
    materials: int
    frames: int
    accepted: int
    by_rule: dict[tuple[str, bool], int]  # (rule, accepted) → frames
    dedupe: DedupeStats


# --------------------------------------------------------------------------- selecting the work


def select_materials(
    engine: Engine,
    fidelities: Sequence[str],
    *,
    materials: Sequence[str] | None = None,
    chemsys: Sequence[str] | None = None,
) -> list[tuple[int, int]]:
    """(material id, frame count) of the materials with frames at ``fidelities``, in external-id order."""
    query = """
        SELECT m.id, count(f.id) AS n_frames
          FROM materials m
          JOIN tasks t ON t.material_id = m.id AND t.fidelity = ANY(:fidelities)
          JOIN frames f ON f.task_id = t.id
         WHERE (CAST(:materials AS text[]) IS NULL OR m.external_id = ANY(CAST(:materials AS text[])))
           AND (CAST(:chemsys AS text[]) IS NULL OR m.chemsys = ANY(CAST(:chemsys AS text[])))
         GROUP BY m.id, m.external_id
         ORDER BY m.external_id
    """
    params = {
        "fidelities": list(fidelities),
        "materials": list(materials) if materials else None,
        "chemsys": ["-".join(sorted(c.split("-"))) for c in chemsys] if chemsys else None,
    }
    with engine.connect() as conn:
        return [(int(i), int(n)) for i, n in conn.execute(text(query), params)]


def partitions(materials: Sequence[tuple[int, int]], max_frames: int = PARTITION_FRAMES) -> list[list[int]]:
    """Group materials (in the given order) into partitions of about ``max_frames`` frames."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for material_id, n_frames in materials:
        if current and size + n_frames > max_frames:
            groups.append(current)
            current, size = [], 0
        current.append(material_id)
        size += n_frames
    if current:
        groups.append(current)
    return groups


# --------------------------------------------------------------------------- one partition (runs on a worker)

_ENGINES: dict[str, Engine] = {}


def _worker_engine(url: str) -> Engine:
    """One small connection pool per worker process and database."""
    engine = _ENGINES.get(url)
    if engine is None:
        from crossfid.db.engine import make_engine

        engine = _ENGINES[url] = make_engine(url, pool_size=1, max_overflow=1)
    return engine


def curate_partition(
    url: str, run_id: int, material_ids: Sequence[int], fidelities: Sequence[str], config: dict, dedupe: str
) -> PartitionResult:
    """Read, decide and write one partition. Safe to run more than once."""
    engine = _worker_engine(url)
    cfg = CurationConfig.from_dict(config)
    with engine.connect() as conn:
        views = _read_partition(conn, material_ids, fidelities)
    stats = DedupeStats()
    rows = []
    result = PartitionResult(materials=len(material_ids))
    for material_id in material_ids:
        tasks, reference = views.get(material_id, ([], None))
        for decision in curate_material(tasks, reference, cfg, dedupe=dedupe, stats=stats):
            rows.append(
                (
                    run_id,
                    decision.frame_key,
                    material_id,
                    decision.accepted,
                    decision.rule,
                    decision.message,
                    jsonable(dict(decision.detail)),
                )
            )
            result.accepted += decision.accepted
    result.frames = len(rows)
    columns = ["run_id", "frame_id", "material_id", "accepted", "rule", "message", "detail"]
    with engine.begin() as conn:
        written = copy_insert(conn, "frame_decisions", rows, columns, conflict_columns=["run_id", "frame_id"])
    result.written = written.n_inserted
    result.dedupe = asdict(stats)
    return result


def _read_partition(conn, material_ids: Sequence[int], fidelities: Sequence[str]):
    """material id → (task views in walking order, primary entry view)."""
    task_rows = conn.execute(
        text(
            """
            SELECT t.id, t.material_id, t.fidelity, t.task_type, t.hubbards, t.input_parameters, t.energy_quantity
              FROM tasks t JOIN sources s ON s.id = t.source_id
             WHERE t.material_id = ANY(:materials) AND t.fidelity = ANY(:fidelities)
             ORDER BY t.material_id, s.name, t.external_id
            """
        ),
        {"materials": list(material_ids), "fidelities": list(fidelities)},
    ).all()
    frame_rows = conn.execute(
        text(
            """
            SELECT f.id, f.task_id, f.ionic_step, f.n_atoms, f.energy_per_atom, f.energy IS NOT NULL,
                   f.forces IS NOT NULL, f.stress IS NOT NULL, f.n_electronic_steps, f.scf_converged,
                   f.lattice, f.atomic_numbers, f.frac_coords
              FROM frames f
             WHERE f.task_id = ANY(:tasks)
             ORDER BY f.task_id, f.ionic_step
            """
        ),
        {"tasks": [row.id for row in task_rows]},
    ).all()
    reference_rows = conn.execute(
        text(
            """
            SELECT r.material_id, r.fidelity, r.energy_per_atom, r.task_id, t.hubbards,
                   coalesce(r.energy_quantity, t.energy_quantity) AS energy_quantity
              FROM reference_entries r LEFT JOIN tasks t ON t.id = r.task_id
             WHERE r.material_id = ANY(:materials) AND r.fidelity = ANY(:fidelities)
            """
        ),
        {"materials": list(material_ids), "fidelities": list(fidelities)},
    ).all()

    frames_of: dict[int, list[FrameView]] = {}
    for row in frame_rows:
        n = row.n_atoms
        frames_of.setdefault(row.task_id, []).append(
            FrameView(
                key=row.id,
                ionic_step=row.ionic_step,
                n_atoms=n,
                energy_per_atom=row.energy_per_atom,
                has_energy=row[5],
                has_forces=row[6],
                has_stress=row[7],
                n_electronic_steps=row.n_electronic_steps,
                scf_converged=row.scf_converged,
                lattice=np.asarray(row.lattice, dtype=float).reshape(3, 3),
                atomic_numbers=np.asarray(row.atomic_numbers, dtype=int),
                frac_coords=np.asarray(row.frac_coords, dtype=float).reshape(n, 3),
            )
        )
    tasks_of: dict[int, list[TaskView]] = {}
    frames_per_fidelity: dict[tuple[int, str], int] = {}
    for row in task_rows:
        frames = tuple(frames_of.get(row.id, ()))
        tasks_of.setdefault(row.material_id, []).append(
            TaskView(
                key=row.id,
                task_type=row.task_type,
                hubbards=row.hubbards or None,
                nelm=nelm_from_input_parameters(row.input_parameters),
                frames=frames,
                energy_quantity=row.energy_quantity,
            )
        )
        key = (row.material_id, row.fidelity)
        frames_per_fidelity[key] = frames_per_fidelity.get(key, 0) + len(frames)

    order = {fidelity: i for i, fidelity in enumerate(fidelities)}
    primary: dict[int, Any] = {}
    for row in reference_rows:
        rank = (-frames_per_fidelity.get((row.material_id, row.fidelity), 0), order[row.fidelity])
        best = primary.get(row.material_id)
        if best is None or rank < best[0]:
            primary[row.material_id] = (rank, row)
    views = {}
    for material_id in material_ids:
        reference = None
        if material_id in primary:
            row = primary[material_id][1]
            hubbards = None  # rule 1 applies to GGA/GGA+U only (CURATION_RULES.md)
            if row.fidelity in ("GGA", "GGA+U"):
                if row.task_id is not None:
                    hubbards = row.hubbards or {}
                elif row.fidelity == "GGA":
                    hubbards = {}
            reference = ReferenceView(
                energy_per_atom=row.energy_per_atom, hubbards=hubbards, energy_quantity=row.energy_quantity
            )
        views[material_id] = (tasks_of.get(material_id, []), reference)
    return views


# --------------------------------------------------------------------------- the run


ProgressCallback = Callable[[int, int], None]


def start_run(
    engine: Engine, fidelities: Sequence[str], selection: dict[str, Any], config: CurationConfig, dedupe: str
) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(CurationRun)
            .values(
                fidelities=list(fidelities),
                selection=jsonable(selection),
                config=config.to_dict(),
                config_hash=config.config_hash(),
                dedupe=dedupe,
                crossfid_version=crossfid.__version__,
            )
            .returning(CurationRun.id)
        ).scalar_one()


def run_curation(
    engine: Engine,
    url: str,
    fidelities: Sequence[str],
    *,
    client,
    materials: Sequence[str] | None = None,
    chemsys: Sequence[str] | None = None,
    config: CurationConfig | None = None,
    dedupe: str = "fast",
    partition_frames: int = PARTITION_FRAMES,
    progress: ProgressCallback | None = None,
) -> CurationSummary:
    """Curate on the Dask ``client``; ``url`` is how workers reach the same database."""
    from dask.distributed import as_completed

    config = config or CurationConfig()
    selection = {"materials": list(materials or []), "chemsys": list(chemsys or [])}
    run_id = start_run(engine, fidelities, selection, config, dedupe)
    try:
        selected = select_materials(engine, fidelities, materials=materials, chemsys=chemsys)
        parts = partitions(selected, partition_frames)
        total = len(selected)
        if progress:
            progress(0, total)
        futures = [
            client.submit(
                curate_partition,
                url,
                run_id,
                part,
                list(fidelities),
                config.to_dict(),
                dedupe,
                key=f"curate-{run_id}-{i}",
                retries=3,
                pure=False,
            )
            for i, part in enumerate(parts)
        ]
        done = 0
        stats = DedupeStats()
        for future in as_completed(futures):
            result: PartitionResult = future.result()
            stats.add(DedupeStats(**result.dedupe))
            done += result.materials
            if progress:
                progress(done, total)
        summary = _finish(engine, run_id, stats)
    except BaseException as exc:
        with engine.begin() as conn:
            conn.execute(
                update(CurationRun)
                .where(CurationRun.id == run_id)
                .values(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=func.now())
            )
        raise
    return summary


def _finish(engine: Engine, run_id: int, stats: DedupeStats) -> CurationSummary:
    with engine.begin() as conn:
        materials, frames, accepted = conn.execute(
            text(
                "SELECT count(DISTINCT material_id), count(*), count(*) FILTER (WHERE accepted) "
                "FROM frame_decisions WHERE run_id = :run"
            ),
            {"run": run_id},
        ).one()
        by_rule = {
            (rule, accepted): count
            for rule, accepted, count in conn.execute(
                text(
                    "SELECT rule, accepted, count(*) FROM frame_decisions WHERE run_id = :run "
                    "GROUP BY rule, accepted ORDER BY accepted DESC, rule"
                ),
                {"run": run_id},
            )
        }
        conn.execute(
            update(CurationRun)
            .where(CurationRun.id == run_id)
            .values(
                status="completed",
                finished_at=func.now(),
                n_materials=materials,
                n_frames=frames,
                n_accepted=accepted,
            )
        )
    return CurationSummary(run_id, materials, frames, accepted, by_rule, stats)


def decisions_of(engine: Engine, run_id: int) -> list[tuple[str, bool, str]]:
    """(frame content hash, accepted, rule) of a run, sorted: comparable across runs and databases."""
    query = text(
        "SELECT f.content_hash, d.accepted, d.rule FROM frame_decisions d JOIN frames f ON f.id = d.frame_id "
        "WHERE d.run_id = :run ORDER BY f.content_hash, d.rule, d.accepted"
    )
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(query, {"run": run_id})]

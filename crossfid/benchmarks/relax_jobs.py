"""Relaxations on Dask: one structure per task, the model loaded once per worker process.

Workers get a :class:`~crossfid.potentials.base.ModelSpec` (name, kind, weights path
and sha256), not the model: :func:`crossfid.potentials.base.load_potential` loads a
package model from the chgnet wheel and a trained one from its weights file (which
must be readable at the same path on every worker: a shared data directory). A
structure that fails (diverges, or ends with an isolated atom) is a failed item,
never a failed run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crossfid.potentials.base import ModelSpec, load_potential, potential_class


@dataclass(frozen=True)
class RelaxSettings:
    """Relaxation settings (recorded in the benchmark parameters): force criterion eV/Å, steps, cell relaxation."""

    fmax: float = 0.03
    steps: int = 500
    relax_cell: bool = True
    max_nn_distance: float = 6.0  # Å: an atom farther than this from its nearest neighbour is a failed relaxation


def relax_one(spec: ModelSpec, item: str, structure: dict, settings: RelaxSettings) -> dict[str, Any]:
    """Relax one structure (a ``Structure.as_dict()``); returns the item id with the relaxation result as a dict."""
    from pymatgen.core import Structure

    from crossfid.benchmarks.relax import relax_structure

    potential_class(spec.family).setup_worker()
    try:
        result = relax_structure(
            load_potential(spec),
            Structure.from_dict(structure),
            fmax=settings.fmax,
            steps=settings.steps,
            relax_cell=settings.relax_cell,
            max_nn_distance=settings.max_nn_distance,
        ).to_dict()
    except Exception as exc:  # a structure that cannot even be read or set up, or a model that cannot be loaded
        result = {"ok": False, "failure": f"{type(exc).__name__}: {exc}"}
    return {"item": item, **result}


def relax_many(
    spec: ModelSpec,
    structures: Sequence[tuple[str, dict]],
    settings: RelaxSettings,
    *,
    client: Any | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Relax every ``(item, structure dict)``; on the Dask ``client`` when given, else in this process."""
    total = len(structures)
    results: dict[str, dict[str, Any]] = {}
    if progress:
        progress(0, total)
    if client is None:
        for item, structure in structures:
            results[item] = relax_one(spec, item, structure, settings)
            if progress:
                progress(len(results), total)
        return results
    from dask.distributed import as_completed

    # the largest cells first (and at a higher priority): a long relaxation started last would leave a worker idle
    order = sorted(range(total), key=lambda i: -len(structures[i][1].get("sites", ())))
    structures = [structures[i] for i in order]
    futures = [
        client.submit(relax_one, spec, item, structure, settings, pure=False, priority=len(structure.get("sites", ())))
        for item, structure in structures
    ]
    for future in as_completed(futures):
        try:
            out = future.result()
        except Exception as exc:  # a lost worker: the structure is a failed item
            index = futures.index(future)
            out = {"item": structures[index][0], "ok": False, "failure": f"task failed: {type(exc).__name__}: {exc}"}
        results[out["item"]] = out
        if progress:
            progress(len(results), total)
    return results

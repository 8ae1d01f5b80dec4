"""Relaxations on Dask: one structure per task, the model loaded once per worker process.

Workers get a :class:`ModelRef` (name, kind, weights path and sha256), not the
model: a package model is loaded from the chgnet wheel, a trained one from its
weights file (which must be readable at the same path on every worker: a shared
data directory). A structure that fails (diverges, or ends with an isolated
atom) is a failed item, never a failed run.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from crossfid.db.models import ModelRow

#: chgnet warns about its own cell-volume tensor whenever it computes stresses; nothing to act on
CHGNET_STRESS_WARNING = "Converting a tensor with requires_grad=True to a scalar"


@dataclass(frozen=True)
class ModelRef:
    """Enough to load a registered model anywhere: picklable, small."""

    name: str
    kind: str
    path: str
    sha256: str

    @classmethod
    def of(cls, row: ModelRow) -> ModelRef:
        return cls(row.name, row.kind, row.path, row.sha256)


@dataclass(frozen=True)
class RelaxSettings:
    """Relaxation settings (recorded in the benchmark parameters): force criterion eV/Å, steps, cell relaxation."""

    fmax: float = 0.03
    steps: int = 500
    relax_cell: bool = True
    max_nn_distance: float = 6.0  # Å: an atom farther than this from its nearest neighbour is a failed relaxation


@functools.lru_cache(maxsize=4)
def load_model(ref: ModelRef) -> Any:
    """The model of ``ref``, once per process (checked against its sha256)."""
    from crossfid.training.registry import PACKAGE_MODELS, RegistryError, file_sha256

    if ref.kind == "package":
        from crossfid.referencing.package_atomrefs import load_chgnet

        return load_chgnet(PACKAGE_MODELS[ref.name].model_name)
    from chgnet.model import CHGNet

    if file_sha256(ref.path) != ref.sha256:
        raise RegistryError(f"model {ref.name}: {ref.path} does not match its registered sha256")
    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet() prints a banner
        return CHGNet.from_file(ref.path)


def relax_one(ref: ModelRef, item: str, structure: dict, settings: RelaxSettings) -> dict[str, Any]:
    """Relax one structure (a ``Structure.as_dict()``); returns the item id with the relaxation result as a dict."""
    import torch
    from pymatgen.core import Structure

    from crossfid.benchmarks.relax import relax_structure

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=CHGNET_STRESS_WARNING)
    try:
        result = relax_structure(
            load_model(ref),
            Structure.from_dict(structure),
            fmax=settings.fmax,
            steps=settings.steps,
            relax_cell=settings.relax_cell,
            max_nn_distance=settings.max_nn_distance,
        ).to_dict()
    except Exception as exc:  # a structure that cannot even be read or set up
        result = {"ok": False, "failure": f"{type(exc).__name__}: {exc}"}
    return {"item": item, **result}


def relax_many(
    ref: ModelRef,
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
            results[item] = relax_one(ref, item, structure, settings)
            if progress:
                progress(len(results), total)
        return results
    from dask.distributed import as_completed

    futures = [client.submit(relax_one, ref, item, structure, settings, pure=False) for item, structure in structures]
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

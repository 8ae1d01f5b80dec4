"""The CHGNet family of :class:`~crossfid.potentials.base.Potential` (chgnet 0.4.x, CPU).

Models: the two shipped in the chgnet wheel (:data:`SHIPPED_MODELS`: ``CHGNet.load()``,
v0.3.0 on MPtrj, and ``CHGNet.load(model_name="r2scan")``, the published transfer
model), and trained weights files in chgnet's checkpoint layout
(``CHGNet.from_file``), checked against their sha256 first. Nothing is downloaded.

Relaxation: chgnet's ``StructOptimizer`` (ASE FIRE, ``FrechetCellFilter`` when the cell
relaxes). chgnet's ``TrajectoryObserver`` records ``atoms.get_stress()`` (ASE Voigt order,
eV/Å³) and the final step twice (once by the optimiser, once after ``run``); the
trajectory returned here has stresses as 3×3 GPa tensors and the repeat dropped.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.errors import IntegrityError, NotFoundError
from crossfid.potentials.base import (
    ModelSpec,
    Potential,
    Prediction,
    Relaxation,
    register_family,
    torch_worker_setup,
)

FAMILY = "CHGNet"  # the models.family of every CHGNet row

#: chgnet warns about its own cell-volume tensor whenever it computes stresses; nothing to act on
CHGNET_STRESS_WARNING = "Converting a tensor with requires_grad=True to a scalar"


@dataclass(frozen=True)
class ShippedModel:
    """A model inside the chgnet wheel, under its crossfid name (also the name of its AtomRef)."""

    name: str
    model_name: str | None  # argument of CHGNet.load (None: the default, v0.3.0)
    directory: str  # folder in chgnet/pretrained/

    @property
    def load_call(self) -> str:
        """How chgnet loads it, as text (recorded in provenance)."""
        return "CHGNet.load()" if self.model_name is None else f"CHGNet.load(model_name={self.model_name!r})"

    def weights_file(self) -> Path:
        """The weights file of this model inside the installed chgnet package."""
        import chgnet

        folder = Path(chgnet.__file__).resolve().parent / "pretrained" / self.directory
        files = sorted(folder.glob("*.pth.tar"))
        if len(files) != 1:
            raise NotFoundError(f"expected one weights file in {folder}, found {len(files)}")
        return files[0]


SHIPPED_MODELS: dict[str, ShippedModel] = {
    "chgnet-0.3.0": ShippedModel("chgnet-0.3.0", None, "0.3.0"),
    "chgnet-r2scan": ShippedModel("chgnet-r2scan", "r2scan", "r2scan"),
}


def chgnet_version() -> str:
    """The installed chgnet version (e.g. ``"0.4.2"``)."""
    from importlib.metadata import version

    return version("chgnet")


def _quietly() -> contextlib.AbstractContextManager:
    return contextlib.redirect_stdout(io.StringIO())  # CHGNet() and CHGNet.load print banners


def _load(spec: ModelSpec) -> ChgnetPotential:
    from chgnet.model import CHGNet

    from crossfid.hashing import sha256_file

    if spec.kind == "package":
        try:
            shipped = SHIPPED_MODELS[spec.name]
        except KeyError:
            known = ", ".join(SHIPPED_MODELS)
            raise NotFoundError(f"no model {spec.name!r} ships with chgnet; known: {known}") from None
        with _quietly():
            if shipped.model_name is None:
                model = CHGNet.load(use_device="cpu", verbose=False)
            else:
                model = CHGNet.load(model_name=shipped.model_name, use_device="cpu", verbose=False)
    else:
        path = Path(spec.path or "")
        if not spec.path or not path.is_file():
            raise NotFoundError(f"model {spec.name}: weights file {spec.path} is missing")
        if sha256_file(path) != spec.sha256:
            raise IntegrityError(f"model {spec.name}: {path} no longer matches its registered sha256")
        with _quietly():
            model = CHGNet.from_file(str(path))
    model.eval()
    return ChgnetPotential(spec.name, model)


class _RecordingFilter:
    """Builds the cell filter the optimiser applies and keeps it, to read its forces afterwards."""

    def __init__(self) -> None:
        from ase.filters import FrechetCellFilter

        self._cls = FrechetCellFilter
        self.instance = None

    def __call__(self, atoms):
        self.instance = self._cls(atoms)
        return self.instance


class ChgnetPotential(Potential):
    """A loaded CHGNet (``model``: the ``chgnet.model.CHGNet``), on CPU."""

    family = FAMILY

    def predict(self, structures: Sequence[Any]) -> list[Prediction]:
        """chgnet's ``predict_structure`` (task efsm), one structure at a time (batching does not help on CPU)."""
        out = []
        for structure in structures:
            p = self.model.predict_structure(structure, task="efsm")
            out.append(
                Prediction(
                    energy=float(p["e"]),  # the model is intensive: eV/atom
                    forces=np.asarray(p["f"], dtype=float),
                    stress=np.asarray(p["s"], dtype=float),  # GPa, ASE sign (1/V dE/dε)
                    magmoms=np.asarray(p["m"], dtype=float).reshape(-1),
                )
            )
        return out

    def predict_graphs(self, graphs: Sequence[Any], batch_size: int = 16) -> list[dict[str, np.ndarray]]:
        """chgnet's ``predict_graph`` (task efsm) of CrystalGraphs in batches: ``e`` eV/atom, ``f``, ``s``, ``m``."""
        if not graphs:
            return []
        out = self.model.predict_graph(list(graphs), task="efsm", batch_size=batch_size)
        out = [out] if isinstance(out, dict) else out
        return [{k: np.asarray(v, dtype=float) for k, v in p.items() if k in "efsm"} for p in out]

    def relax(self, structure: Any, *, fmax: float, steps: int, relax_cell: bool = True) -> Relaxation:
        """``StructOptimizer(FIRE).relax(...)`` of a pymatgen Structure; isolated atoms allowed during the run."""
        from ase import units
        from ase.stress import voigt_6_to_full_3x3_stress
        from chgnet.model.dynamics import StructOptimizer
        from pymatgen.io.ase import AseAtomsAdaptor

        converter = self.model.graph_converter
        previous = converter.on_isolated_atoms
        recorder = _RecordingFilter()
        try:
            with _quietly(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                device = next(self.model.parameters()).device.type
                optimizer = StructOptimizer(
                    model=self.model, optimizer_class="FIRE", use_device=device, on_isolated_atoms="ignore"
                )
                converter.set_isolated_atom_response("ignore")
                atoms = AseAtomsAdaptor().get_atoms(structure)
                result = optimizer.relax(
                    atoms, fmax=fmax, steps=steps, relax_cell=relax_cell, ase_filter=recorder, verbose=False
                )
                optimised = recorder.instance if relax_cell else atoms
                optimised_forces = np.asarray(optimised.get_forces(), dtype=float)
        finally:
            converter.set_isolated_atom_response(previous)
        trajectory = result["trajectory"]
        n_obs = len(trajectory)
        n_steps = max(n_obs - 2, 0)  # initial observation + one per step + the repeated final one
        if (
            n_obs >= 2
            and np.array_equal(trajectory.atom_positions[-1], trajectory.atom_positions[-2])
            and np.array_equal(trajectory.cells[-1], trajectory.cells[-2])
        ):
            n_obs -= 1
        stresses = [
            voigt_6_to_full_3x3_stress(np.asarray(trajectory.stresses[i], dtype=float)) / units.GPa
            for i in range(n_obs)
        ]
        return Relaxation(
            energies=np.asarray(trajectory.energies[:n_obs], dtype=float),
            cells=np.asarray(trajectory.cells[:n_obs], dtype=float),
            positions=np.asarray(trajectory.atom_positions[:n_obs], dtype=float),
            forces=np.asarray(trajectory.forces[:n_obs], dtype=float),
            stresses=np.asarray(stresses, dtype=float).reshape(n_obs, 3, 3),
            magmoms=np.asarray(trajectory.magmoms[:n_obs], dtype=float),
            final_structure=result["final_structure"],
            n_steps=n_steps,
            optimised_forces=optimised_forces,
        )

    def atomref(self) -> np.ndarray:
        """The composition model's per-element energies (eV/atom), 94 values (H..Pu)."""
        composition_model = self.model.composition_model
        if not getattr(composition_model, "is_intensive", True):
            raise ValueError(f"{self.name}: the composition model is extensive; crossfid expects energies per atom")
        return composition_model.fc.weight.detach().cpu().double().numpy().ravel().copy()

    def set_atomref(self, values: np.ndarray) -> None:
        """Copy the values (eV/atom) into the composition model's weights and mark it fitted."""
        import torch

        weight = self.model.composition_model.fc.weight
        array = np.asarray(values, dtype=float).ravel()
        if array.size != weight.numel() or not np.isfinite(array).all():
            raise ValueError(f"an AtomRef for {self.name} needs {weight.numel()} finite values, got {array.size}")
        with torch.no_grad():
            weight.copy_(torch.as_tensor(array, dtype=weight.dtype).view_as(weight))
        self.model.composition_model.fitted = True

    def atomref_parameters(self) -> Iterator[Any]:
        return self.model.composition_model.parameters()

    def n_parameters(self) -> int:
        return int(sum(p.numel() for p in self.model.parameters()))

    def new_untrained(self, seed: int) -> ChgnetPotential:
        """A CHGNet of the same architecture with random weights (``torch.manual_seed(seed)`` first)."""
        import torch
        from chgnet.model import CHGNet

        torch.manual_seed(seed)
        with _quietly():
            model = CHGNet(**self.model.todict()["model_args"])
        return ChgnetPotential(self.name, model)

    def copy(self) -> ChgnetPotential:
        """A deep copy (its model can be changed without touching the cached one)."""
        import copy

        return ChgnetPotential(self.name, copy.deepcopy(self.model))

    @classmethod
    def filter_warnings(cls) -> None:
        """Ignore chgnet's stress warning (:data:`CHGNET_STRESS_WARNING`) in this process."""
        warnings.filterwarnings("ignore", message=CHGNET_STRESS_WARNING)

    @classmethod
    def setup_worker(cls) -> None:
        """One torch thread for the process (kept), chgnet's stress warning silenced, malloc thresholds restored."""
        torch_worker_setup()
        cls.filter_warnings()

    @classmethod
    @contextlib.contextmanager
    def single_thread(cls) -> Iterator[None]:
        """Run with one intra-op torch thread, restoring the previous setting afterwards.

        One thread is used for every prediction, in-process and in Dask workers alike:
        the graphs are tiny (≤ 12 atoms) and one thread measured as fast as two (8
        demo materials: 24 s with one thread, 27 s with two, on 2 cores), it leaves the
        other core to a second worker, and the same thread count everywhere keeps the
        floating-point results bit-identical with and without Dask.
        """
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


register_family(FAMILY, _load, lambda: ChgnetPotential)

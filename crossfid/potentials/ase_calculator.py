"""The ASE family of :class:`~crossfid.potentials.base.Potential`: any ASE calculator as a peer model.

A peer is benchmarked, never fine-tuned: :meth:`AsePotential.atomref`, ``set_atomref``,
``atomref_parameters`` and ``new_untrained`` raise :class:`crossfid.errors.InputError`
(``copy`` returns the potential itself: nothing can change it).

Registration of any calculator (:func:`calculator_spec`): ``ModelSpec(name, kind="calculator",
family="ASE", factory="module:callable", options=<keyword arguments>, path=<weights file or
None>, sha256=<its SHA-256>)``; the loader checks the weights file against ``sha256`` (refused
when it differs or is not given), then calls ``factory(path, **options)`` (``factory(**options)``
without a path), with anything the factory prints swallowed. Example: ASE's effective-medium
theory, ``calculator_spec("emt", "ase.calculators.emt:EMT")``.

Units (as :mod:`crossfid.potentials.base`): ASE's ``get_potential_energy`` (total eV) is
divided by the number of atoms; ``get_stress`` (Voigt, eV/Å³, ASE sign: tensile positive) becomes
a 3×3 tensor in GPa (``/ ase.units.GPa``), the sign kept; forces eV/Å as ASE gives them.

Magnetic moments: ``get_magnetic_moments()`` when the calculator computes ``magmoms``,
otherwise **NaN** (n_atoms,). NaN rather than zeros, because zeros would be a prediction
(non-magnetic) and be scored as one: the test-set benchmark keeps finite errors only
(:mod:`crossfid.benchmarks.testset_mae`), so a model that predicts no moments gets no
magmom MAE instead of a made-up one. A relaxed ``final_structure`` then has no ``magmom``
site property (NaN is not valid JSON, and structures are stored as JSON).

Relaxation: ASE FIRE, with ``FrechetCellFilter`` when the cell relaxes (as chgnet's
``StructOptimizer``); an observer records the initial structure and each ionic step once.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.errors import InputError, IntegrityError, NotFoundError
from crossfid.potentials.base import (
    ModelSpec,
    Potential,
    Prediction,
    Relaxation,
    encode_options,
    register_family,
    torch_worker_setup,
)

FAMILY = "ASE"

#: what the training-only methods of a peer say
NOT_TRAINABLE = "peer models are benchmarked, not fine-tuned"


def calculator_spec(
    name: str,
    factory: str,
    options: dict[str, Any] | None = None,
    *,
    path: str | Path | None = None,
    sha256: str | None = None,
) -> ModelSpec:
    """The :class:`ModelSpec` of the ASE calculator ``factory(path, **options)`` (``factory``: ``module:callable``)."""
    _split_factory(factory)
    return ModelSpec(
        name,
        kind="calculator",
        path=None if path is None else str(path),
        sha256=sha256,
        family=FAMILY,
        factory=factory,
        options=encode_options(options),
    )


def _split_factory(factory: str | None) -> tuple[str, str]:
    module, _, attribute = (factory or "").partition(":")
    if not module or not attribute:
        raise InputError(f"a calculator factory is 'module:callable', got {factory!r}")
    return module, attribute


def resolve_factory(factory: str) -> Callable[..., Any]:
    """The callable named by ``module:callable`` (dotted attributes allowed after the colon)."""
    module_name, attribute = _split_factory(factory)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise NotFoundError(f"calculator factory {factory!r} not found: {exc}") from None
    if not callable(target):
        raise InputError(f"calculator factory {factory!r} is not callable")
    return target


def checked_weights(name: str, path: str | Path | None, sha256: str | None) -> Path:
    """``path`` after checking that it is a file whose SHA-256 equals ``sha256`` (NotFoundError / IntegrityError)."""
    from crossfid.hashing import sha256_file

    file = Path(path or "")
    if not path or not file.is_file():
        raise NotFoundError(f"model {name}: weights file {path} is missing")
    if not sha256:
        raise IntegrityError(f"model {name}: no sha256 given for {file}; a weights file is only loaded when checked")
    if sha256_file(file) != sha256:
        raise IntegrityError(f"model {name}: {file} does not match its registered sha256")
    return file


def quietly() -> contextlib.AbstractContextManager:
    """Swallow what model code prints to stdout (banners), so that crossfid's output stays its own."""
    return contextlib.redirect_stdout(io.StringIO())


def torch_parameter_count(calculator: Any) -> int | None:
    """Parameters of the torch module a calculator keeps as ``model`` (None when it keeps none)."""
    model = getattr(calculator, "model", None)
    parameters = getattr(model, "parameters", None)
    if not callable(parameters):
        return None
    count = int(sum(p.numel() for p in parameters()))
    return count or None


def _load(spec: ModelSpec) -> AsePotential:
    if spec.kind != "calculator":
        raise NotFoundError(
            f"model {spec.name}: the ASE family loads calculators (kind 'calculator' with a factory), not {spec.kind!r}"
        )
    factory = resolve_factory(spec.factory or "")
    args = [] if spec.path is None else [str(checked_weights(spec.name, spec.path, spec.sha256))]
    with quietly(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calculator = factory(*args, **spec.option_values())
    return AsePotential(spec.name, calculator, n_parameters=torch_parameter_count(calculator))


class _RecordingFilter:
    """The cell filter the optimiser moves, kept to read its forces afterwards."""

    def __init__(self) -> None:
        self.instance = None

    def __call__(self, atoms):
        from ase.filters import FrechetCellFilter

        self.instance = FrechetCellFilter(atoms)
        return self.instance


class AsePotential(Potential):
    """An ASE calculator (``model``) as a peer potential; one structure at a time, never trained."""

    family = FAMILY

    def __init__(self, name: str, model: Any, *, n_parameters: int | None = None) -> None:
        super().__init__(name, model)
        self._n_parameters = n_parameters

    # ----------------------------------------------------------------- labels of one ASE Atoms

    def _atoms(self, structure: Any):
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = AseAtomsAdaptor().get_atoms(structure)
        atoms.calc = self.model
        return atoms

    def _magmoms(self, atoms) -> np.ndarray:
        from ase.calculators.calculator import PropertyNotImplementedError

        if "magmoms" in getattr(self.model, "implemented_properties", ()):
            with contextlib.suppress(PropertyNotImplementedError):  # listed, but not computed for these atoms
                return np.asarray(atoms.get_magnetic_moments(), dtype=float).reshape(-1)
        return np.full(len(atoms), np.nan)

    @staticmethod
    def _stress(atoms) -> np.ndarray:
        """ASE's stress (Voigt, eV/Å³, tensile positive) as a 3×3 tensor in GPa, same sign."""
        from ase import units
        from ase.stress import voigt_6_to_full_3x3_stress

        return voigt_6_to_full_3x3_stress(np.asarray(atoms.get_stress(), dtype=float)) / units.GPa

    def _labels(self, atoms) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """Total energy (eV), forces (eV/Å), stress (3×3 GPa) and magmoms (μB or NaN) of calculator-bearing Atoms."""
        with quietly():
            energy = float(atoms.get_potential_energy())
            forces = np.asarray(atoms.get_forces(), dtype=float)
            stress = self._stress(atoms)
            magmoms = self._magmoms(atoms)
        return energy, forces, stress, magmoms

    def predict(self, structures: Sequence[Any]) -> list[Prediction]:
        """Single points of pymatgen Structures: energy eV/atom, forces eV/Å, stress 3×3 GPa, magmoms μB (or NaN)."""
        out = []
        for structure in structures:
            atoms = self._atoms(structure)
            energy, forces, stress, magmoms = self._labels(atoms)
            out.append(Prediction(energy=energy / len(atoms), forces=forces, stress=stress, magmoms=magmoms))
        return out

    def relax(self, structure: Any, *, fmax: float, steps: int, relax_cell: bool = True) -> Relaxation:
        """ASE FIRE (with ``FrechetCellFilter`` when ``relax_cell``) of a pymatgen Structure to ``fmax`` eV/Å."""
        from ase.optimize import FIRE
        from pymatgen.io.ase import AseAtomsAdaptor

        atoms = self._atoms(structure)
        recorder = _RecordingFilter()
        optimised = recorder(atoms) if relax_cell else atoms
        records: list[tuple] = []

        def observe() -> None:
            energy, forces, stress, magmoms = self._labels(atoms)
            records.append(
                (energy, np.array(atoms.cell[:], dtype=float), atoms.get_positions(), forces, stress, magmoms)
            )

        with quietly(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = FIRE(optimised, logfile=None)
            optimizer.attach(observe, interval=1)
            optimizer.run(fmax=fmax, steps=steps)
            optimised_forces = np.asarray(optimised.get_forces(), dtype=float)
        energies, cells, positions, forces, stresses, magmoms = (
            np.asarray(column, dtype=float) for column in zip(*records, strict=True)
        )
        final = atoms.copy()  # without the calculator: no results carried into the structure
        final_structure = AseAtomsAdaptor().get_structure(final)
        if np.isfinite(magmoms[-1]).all():
            final_structure.add_site_property("magmom", magmoms[-1].tolist())
        return Relaxation(
            energies=energies,
            cells=cells,
            positions=positions,
            forces=forces,
            stresses=stresses,
            magmoms=magmoms,
            final_structure=final_structure,
            n_steps=int(optimizer.nsteps),
            optimised_forces=optimised_forces,
        )

    def n_parameters(self) -> int | None:
        """Parameters of the calculator's torch model when it has one, else None (the calculator does not say)."""
        return self._n_parameters

    # ----------------------------------------------------------------- training only: not for peers

    def atomref(self) -> np.ndarray:
        raise InputError(f"{self.name}: {NOT_TRAINABLE} (no AtomRef)")

    def set_atomref(self, values: np.ndarray) -> None:
        raise InputError(f"{self.name}: {NOT_TRAINABLE} (no AtomRef to set)")

    def atomref_parameters(self) -> Iterator[Any]:
        raise InputError(f"{self.name}: {NOT_TRAINABLE} (no AtomRef parameters)")

    def new_untrained(self, seed: int) -> Potential:
        raise InputError(f"{self.name}: {NOT_TRAINABLE} (no untrained copy)")

    def copy(self) -> AsePotential:
        """The potential itself: a peer's model is never changed, so sharing it is harmless."""
        return self

    # ----------------------------------------------------------------- per-process hooks

    @classmethod
    def filter_warnings(cls) -> None:
        """Nothing family-wide to silence (a family built on this one adds its own)."""

    @classmethod
    def setup_worker(cls) -> None:
        """One torch thread for the process (kept), Dask's malloc thresholds undone, warnings filtered."""
        torch_worker_setup()
        cls.filter_warnings()

    @classmethod
    @contextlib.contextmanager
    def single_thread(cls) -> Iterator[None]:
        """Run with one intra-op torch thread (the worker setting), restoring the previous setting afterwards."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)


register_family(FAMILY, _load, lambda: AsePotential)

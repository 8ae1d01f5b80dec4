"""What crossfid needs from an interatomic potential, independent of the model family.

A family implements :class:`Potential` and registers a loader with :func:`register_family`;
callers get models only through :func:`load_potential`, which loads each :class:`ModelSpec`
once per process (Dask workers included); every family checks a weights file against its
sha256 before loading it. Built-in families (:data:`_BUILTIN`): ``CHGNet``
(:mod:`crossfid.potentials.chgnet`, the models crossfid fine-tunes), ``ASE`` (any ASE
calculator, :mod:`crossfid.potentials.ase_calculator`) and ``SevenNet``
(:mod:`crossfid.potentials.sevennet`, peers built on the ASE family). Peers are benchmarked,
never fine-tuned: their training-only methods raise :class:`crossfid.errors.InputError`.

Units everywhere: energies eV (per atom where named so), forces eV/Å, stresses GPa
(3×3, tensile positive, ASE sign), magnetic moments μB, lengths Å.
"""

from __future__ import annotations

import importlib
import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np

#: the family of a :class:`ModelSpec` that does not name one (as ``models.family`` spells it)
DEFAULT_FAMILY = "CHGNet"


@dataclass(frozen=True)
class ModelSpec:
    """Enough to load a model anywhere (picklable, small, hashable: the cache key).

    ``kind`` ``"package"``: a model shipped with the family's package, by crossfid name
    (e.g. ``chgnet-0.3.0``, ``sevennet-0``); ``"trained"``: a weights file at ``path`` (readable
    at the same path on every worker) whose SHA-256 must equal ``sha256``; ``"calculator"``
    (family ``ASE``): the ASE calculator ``factory(*[path], **options)``, ``factory`` a
    ``module:callable`` text, ``options`` keyword arguments as sorted ``(name, JSON text)``
    pairs (:func:`encode_options`), ``path`` an optional weights file checked against ``sha256``.
    """

    name: str
    kind: str = "package"
    path: str | None = None
    sha256: str | None = None
    family: str = DEFAULT_FAMILY
    factory: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def option_values(self) -> dict[str, Any]:
        """:attr:`options` decoded: keyword name → value."""
        return {key: json.loads(text) for key, text in self.options}


def encode_options(options: dict[str, Any] | None) -> tuple[tuple[str, str], ...]:
    """Keyword arguments as :attr:`ModelSpec.options`: sorted ``(name, JSON text)`` pairs (hashable, canonical)."""
    return tuple(
        sorted((str(k), json.dumps(v, sort_keys=True, separators=(",", ":"))) for k, v in (options or {}).items())
    )


@dataclass(frozen=True)
class Prediction:
    """Single-point prediction of one structure."""

    energy: float  # eV/atom
    forces: np.ndarray  # (n_atoms, 3) eV/Å
    stress: np.ndarray  # (3, 3) GPa, tensile positive
    magmoms: np.ndarray  # (n_atoms,) μB; NaN when the model predicts none


@dataclass(frozen=True)
class Relaxation:
    """A relaxation's trajectory (every ionic step once, the initial structure first) and its end.

    ``energies`` total eV (n_steps_recorded,); ``cells`` (…, 3, 3) Å with lattice vectors as
    rows; ``positions`` (…, n_atoms, 3) Cartesian Å; ``forces`` (…, n_atoms, 3) eV/Å;
    ``stresses`` (…, 3, 3) GPa; ``magmoms`` (…, n_atoms) μB, NaN for a model that predicts
    none. ``final_structure``: a pymatgen Structure, with a ``magmom`` site property when the
    model predicts magnetic moments. ``n_steps``: optimiser steps taken.
    ``optimised_forces``: the forces of the degrees of freedom the optimiser moved (with a
    cell filter, positions and the virial per atom), eV/Å, for its convergence criterion.
    """

    energies: np.ndarray
    cells: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    stresses: np.ndarray
    magmoms: np.ndarray
    final_structure: Any
    n_steps: int
    optimised_forces: np.ndarray

    def __len__(self) -> int:
        return len(self.energies)

    def converged(self, fmax: float) -> bool:
        """The optimiser's criterion: largest per-row norm of :attr:`optimised_forces` below ``fmax`` (eV/Å)."""
        import numpy as np

        forces = self.optimised_forces
        return bool(forces.size == 0 or np.linalg.norm(forces, axis=1).max() < fmax)


class Potential(ABC):
    """An interatomic potential: one loaded model of a family.

    Implementations keep the native model in :attr:`model` (training code of the same
    family uses it directly) and never print (model banners are swallowed).
    """

    family: ClassVar[str]

    def __init__(self, name: str, model: Any) -> None:
        self.name = name
        self.model = model

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @abstractmethod
    def predict(self, structures: Sequence[Any]) -> list[Prediction]:
        """Energy (eV/atom), forces, stress and magmoms of each pymatgen Structure, one at a time."""

    @abstractmethod
    def relax(self, structure: Any, *, fmax: float, steps: int, relax_cell: bool = True) -> Relaxation:
        """Relax a pymatgen Structure (FIRE, with a cell filter when ``relax_cell``) to ``fmax`` eV/Å.

        Raises whatever the optimiser raises; callers decide what a failure means.
        Isolated atoms are allowed during the run, so that callers can judge them.
        """

    @abstractmethod
    def atomref(self) -> np.ndarray:
        """The per-element reference energies (eV/atom, index Z−1) the model adds to its output."""

    @abstractmethod
    def set_atomref(self, values: np.ndarray) -> None:
        """Write per-element reference energies (eV/atom, index Z−1, all finite) into the model, in place."""

    @abstractmethod
    def atomref_parameters(self) -> Iterator[Any]:
        """The model parameters that hold the AtomRef (to freeze or train them)."""

    @abstractmethod
    def n_parameters(self) -> int | None:
        """Number of model parameters (None when the model does not say, e.g. a generic ASE calculator)."""

    @abstractmethod
    def copy(self) -> Potential:
        """A deep copy, whose model can be changed without touching this one (e.g. a cached one)."""

    @abstractmethod
    def new_untrained(self, seed: int) -> Potential:
        """The same architecture with random weights drawn under ``seed``."""

    @classmethod
    @abstractmethod
    def setup_worker(cls) -> None:
        """Per-process set-up for a worker running this family: threads, warning filters, allocator tuning."""

    @classmethod
    @abstractmethod
    def single_thread(cls) -> AbstractContextManager[None]:
        """Run the body with one compute thread (the worker setting), restoring the previous setting after."""

    @classmethod
    @abstractmethod
    def filter_warnings(cls) -> None:
        """Silence the family's known harmless warnings in this process (the CLI does it at start)."""


#: whether this process already restored glibc's malloc thresholds
_MALLOC_TUNED = False


def _undo_nanny_malloc_trim() -> None:
    """Give glibc malloc back its normal thresholds in a Dask worker process (once).

    The Dask Nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting that
    also freezes glibc's dynamic mmap threshold at 128 KiB, so every larger torch
    buffer is mmapped and unmapped again: measured on 2 cores, chgnet relaxations
    ran ~2× slower in workers (and serially with the variable set: 45 s instead of
    24 s for 8 materials). Raising the trim (64 MiB) and mmap (32 MiB) thresholds
    restores the speed. Only done when that variable is set, on glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 64 * 1024 * 1024)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to undo
        pass


def torch_worker_setup() -> None:
    """Per-process set-up of a worker of a torch family: malloc thresholds restored, one torch thread (kept)."""
    import torch

    _undo_nanny_malloc_trim()
    torch.set_num_threads(1)


#: family → loader of a ModelSpec, and the class (its per-process hooks)
_FAMILIES: dict[str, tuple[Callable[[ModelSpec], Potential], Callable[[], type[Potential]]]] = {}
#: the families that ship with crossfid: imported (and so registered) on first use
_BUILTIN = {
    "CHGNet": "crossfid.potentials.chgnet",
    "ASE": "crossfid.potentials.ase_calculator",
    "SevenNet": "crossfid.potentials.sevennet",
}
_CACHE: dict[ModelSpec, Potential] = {}
_LOCK = threading.Lock()


def register_family(family: str, loader: Callable[[ModelSpec], Potential], cls: Callable[[], type[Potential]]) -> None:
    """Make ``family`` loadable: ``loader(spec)`` builds a Potential, ``cls()`` returns its class (lazily imported)."""
    _FAMILIES[family] = (loader, cls)


def _family(family: str) -> tuple[Callable[[ModelSpec], Potential], Callable[[], type[Potential]]]:
    if family not in _FAMILIES and family in _BUILTIN:
        importlib.import_module(_BUILTIN[family])  # registers itself

    try:
        return _FAMILIES[family]
    except KeyError:
        from crossfid.errors import NotFoundError

        raise NotFoundError(f"no potential family {family!r}; known: {', '.join(sorted(_FAMILIES))}") from None


def potential_class(family: str = DEFAULT_FAMILY) -> type[Potential]:
    """The :class:`Potential` class of ``family`` (for its per-process hooks), without loading a model."""
    return _family(family)[1]()


def load_potential(spec: ModelSpec | str) -> Potential:
    """The potential of ``spec`` (a crossfid name means a shipped model), loaded once per process.

    The returned object is shared: do not modify its :attr:`~Potential.model` (copy it first).
    Raises :class:`crossfid.errors.NotFoundError` for an unknown name or a missing weights file and
    :class:`crossfid.errors.IntegrityError` when a weights file does not match its sha256.
    """
    if isinstance(spec, str) or spec.kind == "package":  # a shipped model is its name: one cache entry
        spec = ModelSpec(spec) if isinstance(spec, str) else ModelSpec(spec.name, family=spec.family)
    with _LOCK:
        potential = _CACHE.get(spec)
        if potential is None:
            potential = _family(spec.family)[0](spec)
            _CACHE[spec] = potential
        return potential

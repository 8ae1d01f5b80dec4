"""The controlled vocabularies of crossfid, defined once.

The database enforces them: fidelities are rows of the ``fidelities`` table
(``tasks.fidelity`` and ``reference_entries.fidelity`` are foreign keys to it),
the other word lists are CHECK constraints. Migrations never import this module:
each one that sets a vocabulary keeps a frozen copy (``VOCABULARIES`` in the
migration file), and ``tests/db/test_migrate.py`` requires the newest frozen copy
of every vocabulary to equal the one here, so changing a word list here without a
migration fails the tests. The exact functional string (e.g. ``PBE+U``,
``r2SCAN``) of a calculation lives next to its coarse fidelity in ``tasks.run_type``.
Benchmarks and their metrics are a registry, :mod:`crossfid.benchmarks.registry`.
"""

from __future__ import annotations

from typing import NamedTuple


class FidelitySpec(NamedTuple):
    name: str
    family: str  # GGA | meta-GGA | hybrid
    hubbard: bool
    dispersion: str | None  # None, D3, D3(BJ), D4, rVV10, optB88-vdW, ...
    description: str


FIDELITIES: tuple[FidelitySpec, ...] = (
    FidelitySpec("GGA", "GGA", False, None, "PBE generalised-gradient approximation"),
    FidelitySpec("GGA+U", "GGA", True, None, "PBE with Hubbard U (Dudarev)"),
    FidelitySpec("PBEsol", "GGA", False, None, "PBEsol GGA"),
    FidelitySpec("PBEsol+U", "GGA", True, None, "PBEsol with Hubbard U"),
    FidelitySpec("SCAN", "meta-GGA", False, None, "SCAN meta-GGA"),
    FidelitySpec("SCAN+U", "meta-GGA", True, None, "SCAN with Hubbard U"),
    FidelitySpec("r2SCAN", "meta-GGA", False, None, "r2SCAN meta-GGA"),
    FidelitySpec("r2SCAN+U", "meta-GGA", True, None, "r2SCAN with Hubbard U"),
    FidelitySpec("HSE06", "hybrid", False, None, "HSE06 screened hybrid (25% exact exchange, 0.2 1/Å)"),
    FidelitySpec("HSE06+U", "hybrid", True, None, "HSE06 with Hubbard U"),
    FidelitySpec("PBE0", "hybrid", False, None, "PBE0 hybrid"),
    FidelitySpec("PBE-D3", "GGA", False, "D3", "PBE with Grimme D3 (zero damping)"),
    FidelitySpec("PBE-D3(BJ)", "GGA", False, "D3(BJ)", "PBE with Grimme D3, Becke-Johnson damping"),
    FidelitySpec("PBE+U-D3", "GGA", True, "D3", "PBE+U with Grimme D3"),
    FidelitySpec("PBE+U-D3(BJ)", "GGA", True, "D3(BJ)", "PBE+U with Grimme D3(BJ)"),
    FidelitySpec("optB88-vdW", "GGA", False, "optB88-vdW", "optB88 exchange with vdW-DF nonlocal"),
    FidelitySpec("optB86b-vdW", "GGA", False, "optB86b-vdW", "optB86b exchange with vdW-DF nonlocal"),
    FidelitySpec("vdW-DF2", "GGA", False, "vdW-DF2", "rPW86 exchange with vdW-DF2 nonlocal"),
    FidelitySpec("SCAN-rVV10", "meta-GGA", False, "rVV10", "SCAN with rVV10 nonlocal"),
    FidelitySpec("r2SCAN-rVV10", "meta-GGA", False, "rVV10", "r2SCAN with rVV10 nonlocal"),
    FidelitySpec("r2SCAN-D4", "meta-GGA", False, "D4", "r2SCAN with Grimme D4"),
    FidelitySpec("r2SCAN+U-rVV10", "meta-GGA", True, "rVV10", "r2SCAN+U with rVV10 nonlocal"),
)

FIDELITY_NAMES: tuple[str, ...] = tuple(f.name for f in FIDELITIES)

#: ``fidelities.family``
FIDELITY_FAMILIES: tuple[str, ...] = ("GGA", "meta-GGA", "hybrid")

#: ``tasks.task_type``
TASK_TYPES: tuple[str, ...] = ("relax", "static")

#: ``status`` of ingest, curation and benchmark runs
RUN_STATUSES: tuple[str, ...] = ("running", "completed", "failed")

#: ``training_runs.status``: a run stopped by a signal is ``interrupted`` and can be resumed
TRAINING_STATUSES: tuple[str, ...] = (*RUN_STATUSES, "interrupted")

#: ``raw_documents.compression`` (the loader stores gzip)
COMPRESSIONS: tuple[str, ...] = ("gzip", "none")


class TrainingMethod(NamedTuple):
    """A transfer method of the study: where the GNN weights start and which AtomRef the model carries.

    ``label`` is the study's number (``m1``..``m4``) used where a table must be narrow.
    """

    name: str
    label: str
    from_scratch: bool  # random GNN weights in the base model's architecture, instead of the base model's
    target_atomref: bool  # the AtomRef is replaced by the target-fidelity fit
    atomref_trainable: bool  # the AtomRef is trained with the GNN
    description: str


#: ``training_runs.method``; :mod:`crossfid.training.methods` sets models up from these flags
TRAINING_METHODS: tuple[TrainingMethod, ...] = (
    TrainingMethod("scratch", "m1", True, True, False, "random GNN weights, target AtomRef frozen"),
    TrainingMethod("tl-trainable-atomref", "m2", False, False, True, "base model, its AtomRef trainable"),
    TrainingMethod("tl-frozen-atomref", "m3", False, False, False, "base model, its AtomRef frozen"),
    TrainingMethod("tl-refit-atomref", "m4", False, True, False, "base model, target AtomRef frozen"),
)

METHOD_NAMES: tuple[str, ...] = tuple(m.name for m in TRAINING_METHODS)

#: the ``method`` of a shipped (not trained) model on the leaderboard
PRETRAINED = "pretrained"

#: short method labels of narrow tables: ``base`` for a shipped model, the study's ``m1``..``m4`` otherwise
METHOD_LABELS: dict[str, str] = {PRETRAINED: "base", **{m.name: m.label for m in TRAINING_METHODS}}

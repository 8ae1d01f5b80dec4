"""Controlled vocabularies that the database enforces.

The coarse *fidelity* of a calculation is a row of the ``fidelities`` table and
``tasks.fidelity`` / ``reference_entries.fidelity`` are foreign keys to it, so an
unknown fidelity cannot be stored. Adding one is a migration that inserts a row.
The exact functional string (e.g. ``PBE+U``, ``r2SCAN``) lives next to it in
``tasks.run_type``.
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

TASK_TYPES: tuple[str, ...] = ("relax", "static")

INGEST_STATUSES: tuple[str, ...] = ("running", "completed", "failed")

COMPRESSIONS: tuple[str, ...] = ("gzip", "none")

"""Real data in: composable fidelities, how a task got its material, final-frame-only tasks, one energy.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

* ``fidelities`` rows are no longer only the seeded list: any functional that
  pymatgen/emmet identify (± U, ± dispersion, tuned hybrids such as
  ``HSE(AEXX=0.345)``) is inserted by the loader on first use, with what identifies it:
  ``functional``, ``exact_exchange`` (fraction), ``screening`` (1/Å) and the INCAR
  ``parameters``. The family may also be ``LDA``.
* ``tasks.material_rule``: how the task got its material (``MATERIAL_RULES``; NULL for
  tasks stored before this revision).
* ``tasks.final_frame_only``: the task was stored from a document that holds only its
  output (structure, energy, forces, stress), not its ionic steps: it has no trajectory.
* ``tasks.energy_quantity`` / ``reference_entries.energy_quantity``: which VASP energy
  ``frames.energy`` / ``energy_per_atom`` is (``ENERGY_QUANTITIES``). Rows stored before
  this revision are ``unknown`` (tasks) or NULL (entries).
* ``datasets.energy_label``: the training energy chosen when the dataset was frozen
  (``ENERGY_LABELS``). NULL for datasets frozen before this revision, whose training
  label was the corrected energy where a frame had one and the uncorrected one otherwise.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: frozen copy of the word lists of crossfid/vocabulary.py: key → (table, column, values)
VOCABULARIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "FIDELITY_FAMILIES": ("fidelities", "family", ("LDA", "GGA", "meta-GGA", "hybrid")),
    "ENERGY_QUANTITIES:tasks": ("tasks", "energy_quantity", ("e_fr_energy", "e_0_energy", "e_wo_entrp", "unknown")),
    "ENERGY_QUANTITIES:reference_entries": (
        "reference_entries",
        "energy_quantity",
        ("e_fr_energy", "e_0_energy", "e_wo_entrp", "unknown"),
    ),
    "MATERIAL_RULES": (
        "tasks",
        "material_rule",
        ("source", "material-map", "mp-materials", "structure-match-stored", "structure-match-new"),
    ),
    "ENERGY_LABELS": ("datasets", "energy_label", ("uncorrected", "mp2020")),
}

#: frozen copy of what identifies each seeded fidelity: (name, functional, exact exchange, screening 1/Å, INCAR tags)
SEEDED_FIDELITY_PARAMETERS: tuple[tuple[str, str, float | None, float | None, dict], ...] = (
    ("GGA", "PBE", None, None, {"GGA": "PE"}),
    ("GGA+U", "PBE", None, None, {"GGA": "PE", "LDAU": True}),
    ("PBEsol", "PBEsol", None, None, {"GGA": "PS"}),
    ("PBEsol+U", "PBEsol", None, None, {"GGA": "PS", "LDAU": True}),
    ("SCAN", "SCAN", None, None, {"METAGGA": "SCAN"}),
    ("SCAN+U", "SCAN", None, None, {"METAGGA": "SCAN", "LDAU": True}),
    ("r2SCAN", "r2SCAN", None, None, {"METAGGA": "R2SCAN"}),
    ("r2SCAN+U", "r2SCAN", None, None, {"METAGGA": "R2SCAN", "LDAU": True}),
    ("HSE06", "HSE06", 0.25, 0.2, {"GGA": "PE", "LHFCALC": True, "AEXX": 0.25, "HFSCREEN": 0.2}),
    ("HSE06+U", "HSE06", 0.25, 0.2, {"GGA": "PE", "LHFCALC": True, "AEXX": 0.25, "HFSCREEN": 0.2, "LDAU": True}),
    ("PBE0", "PBE0", 0.25, 0.0, {"GGA": "PE", "LHFCALC": True, "AEXX": 0.25, "HFSCREEN": 0.0}),
    ("PBE-D3", "PBE", None, None, {"GGA": "PE", "IVDW": 11}),
    ("PBE-D3(BJ)", "PBE", None, None, {"GGA": "PE", "IVDW": 12}),
    ("PBE+U-D3", "PBE", None, None, {"GGA": "PE", "LDAU": True, "IVDW": 11}),
    ("PBE+U-D3(BJ)", "PBE", None, None, {"GGA": "PE", "LDAU": True, "IVDW": 12}),
    (
        "optB88-vdW",
        "optB88-vdW",
        None,
        None,
        {"GGA": "BO", "PARAM1": 0.1833333333, "PARAM2": 0.22, "LUSE_VDW": True, "AGGAC": 0.0},
    ),
    (
        "optB86b-vdW",
        "optB86b-vdW",
        None,
        None,
        {"GGA": "MK", "PARAM1": 0.1234, "PARAM2": 1.0, "LUSE_VDW": True, "AGGAC": 0.0},
    ),
    ("vdW-DF2", "vdW-DF2", None, None, {"GGA": "ML", "Zab_vdW": -1.8867, "LUSE_VDW": True, "AGGAC": 0.0}),
    ("SCAN-rVV10", "SCAN", None, None, {"METAGGA": "SCAN", "LUSE_VDW": True}),
    ("r2SCAN-rVV10", "r2SCAN", None, None, {"METAGGA": "R2SCAN", "LUSE_VDW": True}),
    ("r2SCAN-D4", "r2SCAN", None, None, {"METAGGA": "R2SCAN", "IVDW": 13}),
    ("r2SCAN+U-rVV10", "r2SCAN", None, None, {"METAGGA": "R2SCAN", "LDAU": True, "LUSE_VDW": True}),
)

#: checks that are new in this revision (the others replace an existing one)
_NEW_CHECKS = (
    "tasks.energy_quantity",
    "reference_entries.energy_quantity",
    "tasks.material_rule",
    "datasets.energy_label",
)


def _check(table: str, column: str, values: tuple[str, ...]) -> None:
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    name = op.f(f"ck_{table}_{column}")
    if f"{table}.{column}" not in _NEW_CHECKS:
        op.drop_constraint(name, table, type_="check")
    op.create_check_constraint(name, table, f"{column} IN ({quoted})")  # NULL passes a CHECK


def upgrade() -> None:
    op.add_column("fidelities", sa.Column("functional", sa.Text(), nullable=True))
    op.add_column("fidelities", sa.Column("exact_exchange", sa.DOUBLE_PRECISION(), nullable=True))
    op.add_column("fidelities", sa.Column("screening", sa.DOUBLE_PRECISION(), nullable=True))
    op.add_column("fidelities", sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), nullable=True))
    op.create_check_constraint(
        op.f("ck_fidelities_exact_exchange_fraction"),
        "fidelities",
        "exact_exchange IS NULL OR (exact_exchange >= 0 AND exact_exchange <= 1)",
    )
    op.create_check_constraint(
        op.f("ck_fidelities_screening_non_negative"), "fidelities", "screening IS NULL OR screening >= 0"
    )
    op.add_column("tasks", sa.Column("material_rule", sa.Text(), nullable=True))
    op.add_column("tasks", sa.Column("final_frame_only", sa.Boolean(), server_default=sa.text("false"), nullable=False))
    op.add_column("tasks", sa.Column("energy_quantity", sa.Text(), server_default="unknown", nullable=False))
    op.add_column("reference_entries", sa.Column("energy_quantity", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("energy_label", sa.Text(), nullable=True))
    for table, column, values in VOCABULARIES.values():
        _check(table, column, values)
    fidelities = sa.table(
        "fidelities",
        sa.column("name", sa.Text()),
        sa.column("functional", sa.Text()),
        sa.column("exact_exchange", sa.DOUBLE_PRECISION()),
        sa.column("screening", sa.DOUBLE_PRECISION()),
        sa.column("parameters", postgresql.JSONB()),
    )
    for name, functional, exact_exchange, screening, parameters in SEEDED_FIDELITY_PARAMETERS:
        op.execute(
            fidelities.update()
            .where(fidelities.c.name == name)
            .values(functional=functional, exact_exchange=exact_exchange, screening=screening, parameters=parameters)
        )


def downgrade() -> None:
    op.drop_column("datasets", "energy_label")
    op.drop_column("reference_entries", "energy_quantity")
    op.drop_column("tasks", "energy_quantity")
    op.drop_column("tasks", "final_frame_only")
    op.drop_column("tasks", "material_rule")
    op.drop_constraint(op.f("ck_fidelities_screening_non_negative"), "fidelities", type_="check")
    op.drop_constraint(op.f("ck_fidelities_exact_exchange_fraction"), "fidelities", type_="check")
    for column in ("parameters", "screening", "exact_exchange", "functional"):
        op.drop_column("fidelities", column)
    quoted = "'GGA', 'meta-GGA', 'hybrid'"
    op.drop_constraint(op.f("ck_fidelities_family"), "fidelities", type_="check")
    op.create_check_constraint(op.f("ck_fidelities_family"), "fidelities", f"family IN ({quoted})")

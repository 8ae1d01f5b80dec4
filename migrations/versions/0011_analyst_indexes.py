"""Indexes for the analyst's queries: covering index of frame labels by task, dataset frames by material.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

* ``ix_frames_task_id_labels`` on ``frames (task_id) INCLUDE (n_atoms, energy_per_atom,
  max_force)``: per-fidelity or per-material statistics of energies and forces (join
  ``tasks`` on its ``(material_id, fidelity)`` index, then read the labels from this index
  alone) never read the wide frame rows (structures, forces arrays).
* ``ix_dataset_frames_dataset_id_material_id`` becomes ``(dataset_id, material_id) INCLUDE
  (frame_id)``: "frames of dataset X whose material has Fe" filters ``materials`` through its
  GIN index on ``elements`` (``elements @> ARRAY['Fe']``) and finds each material's frames of
  the dataset in this index without touching the table.

docs/sql.md shows each cookbook query with its plan.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_frames_task_id_labels",
        "frames",
        ["task_id"],
        postgresql_include=["n_atoms", "energy_per_atom", "max_force"],
    )
    op.drop_index("ix_dataset_frames_dataset_id_material_id", table_name="dataset_frames")
    op.create_index(
        "ix_dataset_frames_dataset_id_material_id",
        "dataset_frames",
        ["dataset_id", "material_id"],
        postgresql_include=["frame_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_dataset_frames_dataset_id_material_id", table_name="dataset_frames")
    op.create_index("ix_dataset_frames_dataset_id_material_id", "dataset_frames", ["dataset_id", "material_id"])
    op.drop_index("ix_frames_task_id_labels", table_name="frames")

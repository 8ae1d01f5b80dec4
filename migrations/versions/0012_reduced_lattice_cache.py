"""Cache of reduced lattices by frame content hash (owned by the curation work).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

Placeholder: no schema change yet.
"""

from collections.abc import Sequence

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

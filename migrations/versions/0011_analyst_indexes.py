"""Indexes for the analyst's queries (owned by the SQL work).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

Placeholder: no schema change yet.
"""

from collections.abc import Sequence

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass

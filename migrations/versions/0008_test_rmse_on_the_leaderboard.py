"""The test-rmse benchmark's energy and force RMSE become columns of the leaderboard view.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: frozen rows of leaderboard_columns added here: (position, column, benchmark, metric, unit, better, ranked, scale)
ADDED = (
    (12, "test_energy_rmse", "test-rmse", "energy_rmse", "meV/atom", "lower", False, None),
    (13, "test_force_rmse", "test-rmse", "force_rmse", "meV/Å", "lower", False, None),
)

KEYS = ("position", "column_name", "benchmark", "metric", "unit", "better", "ranked", "scale")


def upgrade() -> None:
    table = sa.table("leaderboard_columns", *(sa.column(k) for k in KEYS))
    op.bulk_insert(table, [dict(zip(KEYS, row, strict=True)) for row in ADDED])
    op.execute("SELECT crossfid_leaderboard_view()")


def downgrade() -> None:
    positions = ", ".join(str(row[0]) for row in ADDED)
    op.execute(f"DELETE FROM leaderboard_columns WHERE position IN ({positions})")
    op.execute("SELECT crossfid_leaderboard_view()")

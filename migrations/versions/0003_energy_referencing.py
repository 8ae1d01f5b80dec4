"""Energy referencing: AtomRefs (fitted and shipped with chgnet) and stored cross-fidelity analyses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: CHGNet's 94 elements in column order (atomic number = position)
SYMBOLS = (  # noqa: SIM905 - 94 symbols read better as one string
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag "
    "Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu"
).split()

# AtomRef rows are immutable: a training run or analysis that used one must be able to trust it.
IMMUTABLE_FUNCTION = """
    CREATE FUNCTION crossfid_refuse_update() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '% rows are immutable (% of id %)', TG_TABLE_NAME, TG_OP, OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END
    $$
"""

_SYMBOL_ARRAY = "ARRAY[" + ", ".join(f"'{s}'" for s in SYMBOLS) + "]::text[]"

VIEWS = {
    "v_atomrefs": (
        "One row per AtomRef: where it came from and how well it fits (MAE in meV/atom)",
        """
        SELECT a.id, a.name, a.kind, a.fidelities,
               d.name || ':' || d.version AS dataset, a.split_id, a.part, a.weighting,
               a.n_frames, a.n_materials, cardinality(a.elements) AS n_elements, a.rank,
               round((a.mae * 1000)::numeric, 3) AS mae_mev_per_atom,
               round((a.rmse * 1000)::numeric, 3) AS rmse_mev_per_atom,
               a.absent_elements, a.unidentifiable_elements, a.filled_elements,
               f.name AS filled_from, p.name AS prior, a.values_hash, a.dataset_hash, a.split_hash, a.created_at
        FROM atomrefs a
        LEFT JOIN datasets d ON d.id = a.dataset_id
        LEFT JOIN atomrefs f ON f.id = a.fill_from_id
        LEFT JOIN atomrefs p ON p.id = a.prior_id
        """,
    ),
    "v_atomref_energies": (
        "AtomRefs in long form: one row per AtomRef and element (eV/atom; NULL where the fit had no data)",
        f"""
        SELECT a.id AS atomref_id, a.name AS atomref, e.z AS atomic_number,
               ({_SYMBOL_ARRAY})[e.z] AS element, e.energy AS energy_ev_per_atom,
               ({_SYMBOL_ARRAY})[e.z] = ANY(a.filled_elements) AS filled
        FROM atomrefs a, unnest(a.energies) WITH ORDINALITY AS e(energy, z)
        """,
    ),
    "v_cross_fidelity_analyses": (
        "Stored cross-fidelity analyses with their headline numbers and figure files",
        """
        SELECT c.id, c.kind, c.source_fidelities, c.target_fidelities,
               d.name || ':' || d.version AS dataset, c.split_id,
               sa.name AS source_atomref, ta.name AS target_atomref, c.corrections, c.n_materials,
               (c.result -> 'raw' ->> 'pearson')::float8 AS pearson_raw,
               (c.result -> 'referenced' ->> 'pearson')::float8 AS pearson_referenced,
               c.result ->> 'verdict' AS verdict, c.figures, c.created_at
        FROM cross_fidelity_analyses c
        LEFT JOIN datasets d ON d.id = c.dataset_id
        LEFT JOIN atomrefs sa ON sa.id = c.source_atomref_id
        LEFT JOIN atomrefs ta ON ta.id = c.target_atomref_id
        """,
    ),
}


def upgrade() -> None:
    op.create_table(
        "atomrefs",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("energies", postgresql.ARRAY(sa.DOUBLE_PRECISION()), nullable=False),
        sa.Column("values_hash", sa.Text(), nullable=False),
        sa.Column("elements", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("absent_elements", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("unidentifiable_elements", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("filled_elements", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False),
        sa.Column("fill_from_id", sa.BigInteger(), nullable=True),
        sa.Column("prior_id", sa.BigInteger(), nullable=True),
        sa.Column("dataset_id", sa.BigInteger(), nullable=True),
        sa.Column("split_id", sa.BigInteger(), nullable=True),
        sa.Column("part", sa.Text(), nullable=True),
        sa.Column("dataset_hash", sa.Text(), nullable=True),
        sa.Column("split_hash", sa.Text(), nullable=True),
        sa.Column("weighting", sa.Text(), nullable=True),
        sa.Column("n_frames", sa.Integer(), nullable=True),
        sa.Column("n_materials", sa.Integer(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("mae", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("rmse", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("max_abs_error", sa.DOUBLE_PRECISION(), nullable=True),
        sa.Column("solver", sa.Text(), nullable=True),
        sa.Column("statistics", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("provenance", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("fit_key", sa.Text(), nullable=True),
        sa.Column("crossfid_version", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "kind <> 'split' OR (split_id IS NOT NULL AND part IS NOT NULL AND weighting IS NOT NULL)",
            name=op.f("ck_atomrefs_split_fit_has_split"),
        ),
        sa.CheckConstraint("kind IN ('split', 'entries', 'package')", name=op.f("ck_atomrefs_kind")),
        sa.CheckConstraint(
            "length(values_hash) = 64 AND ltrim(values_hash, '0123456789abcdef') = ''",
            name=op.f("ck_atomrefs_values_hash_hex"),
        ),
        sa.CheckConstraint("part IS NULL OR part IN ('train', 'val', 'test')", name=op.f("ck_atomrefs_part")),
        sa.CheckConstraint(
            "weighting IS NULL OR weighting IN ('frame', 'material')", name=op.f("ck_atomrefs_weighting")
        ),
        sa.CheckConstraint("cardinality(energies) = 94", name=op.f("ck_atomrefs_energies_94")),
        sa.CheckConstraint("cardinality(fidelities) > 0", name=op.f("ck_atomrefs_has_fidelities")),
        sa.CheckConstraint("crossfid_all_finite(energies)", name=op.f("ck_atomrefs_energies_finite")),
        sa.CheckConstraint("mae IS NULL OR mae >= 0", name=op.f("ck_atomrefs_mae_nonnegative")),
        sa.ForeignKeyConstraint(["dataset_id"], ["datasets.id"], name=op.f("fk_atomrefs_dataset_id_datasets")),
        sa.ForeignKeyConstraint(["fill_from_id"], ["atomrefs.id"], name=op.f("fk_atomrefs_fill_from_id_atomrefs")),
        sa.ForeignKeyConstraint(["prior_id"], ["atomrefs.id"], name=op.f("fk_atomrefs_prior_id_atomrefs")),
        sa.ForeignKeyConstraint(["split_id"], ["splits.id"], name=op.f("fk_atomrefs_split_id_splits")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_atomrefs")),
        sa.UniqueConstraint("fit_key", name=op.f("uq_atomrefs_fit_key")),
        sa.UniqueConstraint("name", name=op.f("uq_atomrefs_name")),
    )
    op.create_index(op.f("ix_atomrefs_dataset_id"), "atomrefs", ["dataset_id"], unique=False)
    op.create_index(op.f("ix_atomrefs_fill_from_id"), "atomrefs", ["fill_from_id"], unique=False)
    op.create_index(op.f("ix_atomrefs_prior_id"), "atomrefs", ["prior_id"], unique=False)
    op.create_index(op.f("ix_atomrefs_split_id"), "atomrefs", ["split_id"], unique=False)
    op.create_index(op.f("ix_atomrefs_values_hash"), "atomrefs", ["values_hash"], unique=False)
    op.create_table(
        "cross_fidelity_analyses",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("source_fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("target_fidelities", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("dataset_id", sa.BigInteger(), nullable=True),
        sa.Column("split_id", sa.BigInteger(), nullable=True),
        sa.Column("source_atomref_id", sa.BigInteger(), nullable=True),
        sa.Column("target_atomref_id", sa.BigInteger(), nullable=True),
        sa.Column("corrections", sa.Text(), server_default="none", nullable=False),
        sa.Column("n_materials", sa.Integer(), nullable=False),
        sa.Column("input_hash", sa.Text(), nullable=False),
        sa.Column("parameters", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("figures", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("crossfid_version", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "corrections IN ('none', 'mp2020', 'both')", name=op.f("ck_cross_fidelity_analyses_corrections")
        ),
        sa.CheckConstraint(
            "kind IN ('correlation', 'shifts', 'importance', 'transferability')",
            name=op.f("ck_cross_fidelity_analyses_kind"),
        ),
        sa.CheckConstraint(
            "length(input_hash) = 64 AND ltrim(input_hash, '0123456789abcdef') = ''",
            name=op.f("ck_cross_fidelity_analyses_input_hash_hex"),
        ),
        sa.CheckConstraint(
            "cardinality(source_fidelities) > 0 AND cardinality(target_fidelities) > 0",
            name=op.f("ck_cross_fidelity_analyses_fidelities"),
        ),
        sa.CheckConstraint("n_materials >= 0", name=op.f("ck_cross_fidelity_analyses_n_materials_nonnegative")),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_cross_fidelity_analyses_dataset_id_datasets")
        ),
        sa.ForeignKeyConstraint(
            ["source_atomref_id"], ["atomrefs.id"], name=op.f("fk_cross_fidelity_analyses_source_atomref_id_atomrefs")
        ),
        sa.ForeignKeyConstraint(["split_id"], ["splits.id"], name=op.f("fk_cross_fidelity_analyses_split_id_splits")),
        sa.ForeignKeyConstraint(
            ["target_atomref_id"], ["atomrefs.id"], name=op.f("fk_cross_fidelity_analyses_target_atomref_id_atomrefs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cross_fidelity_analyses")),
    )
    op.create_index(
        op.f("ix_cross_fidelity_analyses_dataset_id"), "cross_fidelity_analyses", ["dataset_id"], unique=False
    )
    op.create_index(op.f("ix_cross_fidelity_analyses_kind"), "cross_fidelity_analyses", ["kind"], unique=False)
    op.create_index(
        op.f("ix_cross_fidelity_analyses_source_atomref_id"),
        "cross_fidelity_analyses",
        ["source_atomref_id"],
        unique=False,
    )
    op.create_index(op.f("ix_cross_fidelity_analyses_split_id"), "cross_fidelity_analyses", ["split_id"], unique=False)
    op.create_index(
        op.f("ix_cross_fidelity_analyses_target_atomref_id"),
        "cross_fidelity_analyses",
        ["target_atomref_id"],
        unique=False,
    )
    op.execute(IMMUTABLE_FUNCTION)
    op.execute(
        "CREATE TRIGGER atomrefs_immutable BEFORE UPDATE ON atomrefs FOR EACH ROW EXECUTE FUNCTION crossfid_refuse_update()"
    )
    for name, (comment, query) in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")
        op.execute(f"COMMENT ON VIEW {name} IS '{comment}'")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute("DROP TRIGGER IF EXISTS atomrefs_immutable ON atomrefs")
    op.drop_index(op.f("ix_cross_fidelity_analyses_target_atomref_id"), table_name="cross_fidelity_analyses")
    op.drop_index(op.f("ix_cross_fidelity_analyses_split_id"), table_name="cross_fidelity_analyses")
    op.drop_index(op.f("ix_cross_fidelity_analyses_source_atomref_id"), table_name="cross_fidelity_analyses")
    op.drop_index(op.f("ix_cross_fidelity_analyses_kind"), table_name="cross_fidelity_analyses")
    op.drop_index(op.f("ix_cross_fidelity_analyses_dataset_id"), table_name="cross_fidelity_analyses")
    op.drop_table("cross_fidelity_analyses")
    op.drop_index(op.f("ix_atomrefs_values_hash"), table_name="atomrefs")
    op.drop_index(op.f("ix_atomrefs_split_id"), table_name="atomrefs")
    op.drop_index(op.f("ix_atomrefs_prior_id"), table_name="atomrefs")
    op.drop_index(op.f("ix_atomrefs_fill_from_id"), table_name="atomrefs")
    op.drop_index(op.f("ix_atomrefs_dataset_id"), table_name="atomrefs")
    op.drop_table("atomrefs")
    op.execute("DROP FUNCTION IF EXISTS crossfid_refuse_update()")

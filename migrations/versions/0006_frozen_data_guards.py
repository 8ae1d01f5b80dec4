"""Frozen datasets and splits cannot be changed indirectly: memberships, subsets, frames, tasks, materials, decisions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

Revision 0002 made a frozen dataset's row and membership refuse UPDATE and DELETE, but
its membership trigger looked only at the OLD row, so ``UPDATE dataset_frames SET
dataset_id = <frozen>`` moved members into a frozen set; split subsets accepted INSERT;
and the frames, tasks and materials a frozen dataset is made of could be changed or
deleted. This revision closes those routes (every trigger raises SQLSTATE 23000,
``integrity_constraint_violation``, with a message naming the dataset or split):

* membership (``dataset_frames``, ``split_members``): INSERT, UPDATE (OLD *and* NEW
  parent) and DELETE refused when the parent is frozen (``crossfid_refuse_frozen_parent``,
  redefined);
* ``split_subsets``: UPDATE and DELETE refused on a frozen split; INSERT on a frozen split
  only of the split's own deterministic nested training subset (the first SIZE training
  frames in the seeded order, with its content hash), which is what ``create_split``
  adds when asked for a new size of an existing split (``crossfid_guard_split_subsets``);
* ``splits``: a split can be frozen only over a frozen dataset, with exactly the
  dataset's frames as members and subsets drawn from its training part
  (``crossfid_check_split_freeze``), so a frozen split's frames are always frames of a
  frozen dataset;
* ``frames``, ``tasks``, ``materials``: UPDATE and DELETE refused for rows a frozen
  dataset holds (frames that are members; tasks and materials of member frames), except
  updates that change nothing but the listed provenance columns (tasks' ingest run and raw
  document, set NULL when those are deleted) or generated columns
  (``crossfid_refuse_frozen_source``); index-backed lookups: ``dataset_frames(frame_id)``,
  ``frames(task_id, ionic_step)``, ``dataset_frames(dataset_id, material_id)`` per frozen
  dataset;
* ``curation_runs`` and ``frame_decisions``: the run a frozen dataset was made from and
  its decisions (the record of why each frame is in or out) are immutable: UPDATE and
  DELETE refused, and INSERT of decisions into such a run (one statement-level check);
* TRUNCATE of any of these tables is refused while a frozen dataset exists.

The content hash of a dataset covers only its frames' content hashes; the triggers also
protect what is not hashed (tasks, materials, decisions). ``crossfid dataset verify``
recomputes every hash from the stored rows, which catches changes made with the
triggers disabled.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the body of revision 0002, restored by the downgrade
PARENT_FUNCTION_0002 = """
    CREATE OR REPLACE FUNCTION crossfid_refuse_frozen_parent() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        parent_table text := TG_ARGV[0];
        parent_column text := TG_ARGV[1];
        parent_id bigint;
        is_frozen boolean;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            parent_id := (to_jsonb(NEW) ->> parent_column)::bigint;
        ELSE
            parent_id := (to_jsonb(OLD) ->> parent_column)::bigint;
        END IF;
        EXECUTE format('SELECT frozen FROM %I WHERE id = $1', parent_table) INTO is_frozen USING parent_id;
        IF is_frozen THEN
            RAISE EXCEPTION '% % is frozen: its members cannot be changed (%)', parent_table, parent_id, TG_OP
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END
    $$
"""

PARENT_FUNCTION = """
    CREATE OR REPLACE FUNCTION crossfid_refuse_frozen_parent() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        parent_table text := TG_ARGV[0];
        parent_column text := TG_ARGV[1];
        old_id bigint;
        new_id bigint;
        frozen_id bigint;
        label text;
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            old_id := (to_jsonb(OLD) ->> parent_column)::bigint;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            new_id := (to_jsonb(NEW) ->> parent_column)::bigint;
        END IF;
        IF parent_table = 'datasets' THEN
            SELECT id INTO frozen_id FROM datasets WHERE id IN (old_id, new_id) AND frozen ORDER BY id LIMIT 1;
            label := crossfid_dataset_label(frozen_id);
        ELSIF parent_table = 'splits' THEN
            SELECT id INTO frozen_id FROM splits WHERE id IN (old_id, new_id) AND frozen ORDER BY id LIMIT 1;
            label := crossfid_split_label(frozen_id);
        ELSE
            RAISE EXCEPTION 'crossfid_refuse_frozen_parent: unknown parent table %', parent_table;
        END IF;
        IF frozen_id IS NOT NULL THEN
            RAISE EXCEPTION '% is frozen: its members cannot be changed (% on %)', label, TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END
    $$
"""

#: new functions (signature → DDL), created in this order and dropped in reverse
FUNCTIONS = {
    "crossfid_dataset_label(bigint)": """
        CREATE FUNCTION crossfid_dataset_label(dataset bigint) RETURNS text LANGUAGE sql STABLE AS $$
            SELECT format('dataset %s:%s (id %s)', d.name, d.version, d.id) FROM datasets d WHERE d.id = dataset
        $$
    """,
    "crossfid_split_label(bigint)": """
        CREATE FUNCTION crossfid_split_label(split bigint) RETURNS text LANGUAGE sql STABLE AS $$
            SELECT format('split %s of dataset %s:%s', s.id, d.name, d.version)
              FROM splits s JOIN datasets d ON d.id = s.dataset_id
             WHERE s.id = split
        $$
    """,
    # A frozen split's nested subsets are a function of the split: the first SIZE training
    # frames ordered by sha256("{seed}\\0{content hash}"), then the hash, then the frame's
    # stable key (material, task, source, ionic step), exactly as
    # crossfid.curation.split_store.create_split writes them (code-point order = COLLATE "C").
    "crossfid_guard_split_subsets()": r"""
        CREATE FUNCTION crossfid_guard_split_subsets() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            frozen_id bigint;
            split_seed integer;
            expected_ids bigint[];
            expected_hash text;
        BEGIN
            IF TG_OP = 'DELETE' THEN
                SELECT id INTO frozen_id FROM splits WHERE id = OLD.split_id AND frozen;
            ELSIF TG_OP = 'UPDATE' THEN
                SELECT id INTO frozen_id FROM splits
                 WHERE id IN (OLD.split_id, NEW.split_id) AND frozen ORDER BY id LIMIT 1;
            END IF;
            IF frozen_id IS NOT NULL THEN
                RAISE EXCEPTION '% is frozen: its subsets cannot be changed (% on split_subsets)',
                    crossfid_split_label(frozen_id), TG_OP
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            IF TG_OP <> 'INSERT' THEN
                RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END IF;

            SELECT seed INTO split_seed FROM splits WHERE id = NEW.split_id AND frozen;
            IF NOT FOUND THEN
                RETURN NEW;  -- a split being created: its subsets are written before it is frozen
            END IF;
            SELECT array_agg(o.frame_id ORDER BY o.position),
                   encode(sha256(convert_to(
                       'crossfid-subset-v1' || E'\n' || string_agg(o.h || E'\n', '' ORDER BY o.h COLLATE "C"),
                       'UTF8')), 'hex')
              INTO expected_ids, expected_hash
              FROM (
                SELECT sm.frame_id, f.content_hash AS h,
                       row_number() OVER (
                           ORDER BY sha256(convert_to(split_seed::text, 'UTF8') || '\x00'::bytea
                                           || convert_to(f.content_hash, 'UTF8')),
                                    f.content_hash COLLATE "C", m.external_id COLLATE "C",
                                    t.external_id COLLATE "C", src.name COLLATE "C", f.ionic_step
                       ) AS position
                  FROM split_members sm
                  JOIN frames f ON f.id = sm.frame_id
                  JOIN tasks t ON t.id = f.task_id
                  JOIN sources src ON src.id = t.source_id
                  JOIN materials m ON m.id = sm.material_id
                 WHERE sm.split_id = NEW.split_id AND sm.part = 'train'
              ) o
             WHERE o.position <= NEW.size;
            IF cardinality(expected_ids) IS DISTINCT FROM NEW.size
               OR expected_ids IS DISTINCT FROM NEW.frame_ids
               OR expected_hash IS DISTINCT FROM NEW.content_hash THEN
                RAISE EXCEPTION '% is frozen: a subset of size % can only be added as its deterministic nested '
                                'training subset (first % training frames in the seeded order, hash %)',
                    crossfid_split_label(NEW.split_id), NEW.size, NEW.size, coalesce(expected_hash, 'none')
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END
        $$
    """,
    "crossfid_check_split_freeze()": """
        CREATE FUNCTION crossfid_check_split_freeze() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            dataset_frozen boolean;
            n_members bigint;
            n_dataset bigint;
            n_foreign bigint;
            n_outside bigint;
        BEGIN
            IF NOT NEW.frozen OR (TG_OP = 'UPDATE' AND OLD.frozen) THEN
                RETURN NEW;
            END IF;
            SELECT frozen INTO dataset_frozen FROM datasets WHERE id = NEW.dataset_id;
            IF NOT coalesce(dataset_frozen, false) THEN
                RAISE EXCEPTION 'split % cannot be frozen: % is not frozen', NEW.id,
                    coalesce(crossfid_dataset_label(NEW.dataset_id), 'its dataset')
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            SELECT count(*) INTO n_members FROM split_members WHERE split_id = NEW.id;
            SELECT count(*) INTO n_dataset FROM dataset_frames WHERE dataset_id = NEW.dataset_id;
            SELECT count(*) INTO n_foreign
              FROM split_members sm
             WHERE sm.split_id = NEW.id
               AND NOT EXISTS (SELECT 1 FROM dataset_frames df
                                WHERE df.dataset_id = NEW.dataset_id AND df.frame_id = sm.frame_id
                                  AND df.material_id = sm.material_id);
            IF n_foreign > 0 OR n_members <> n_dataset THEN
                RAISE EXCEPTION 'split % cannot be frozen: its % members are not exactly the % frames of %'
                                ' (% are not frames of the dataset)',
                    NEW.id, n_members, n_dataset, crossfid_dataset_label(NEW.dataset_id), n_foreign
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            SELECT count(*) INTO n_outside
              FROM split_subsets ss CROSS JOIN LATERAL unnest(ss.frame_ids) AS u(frame_id)
             WHERE ss.split_id = NEW.id
               AND NOT EXISTS (SELECT 1 FROM split_members sm
                                WHERE sm.split_id = NEW.id AND sm.frame_id = u.frame_id AND sm.part = 'train');
            IF n_outside > 0 THEN
                RAISE EXCEPTION 'split % cannot be frozen: its subsets hold % frames outside its training part',
                    NEW.id, n_outside
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END
        $$
    """,
    # UPDATE/DELETE of the rows a frozen dataset is made of. TG_ARGV: columns whose change
    # alone is allowed (generated columns, provenance pointers set NULL by ON DELETE SET NULL).
    "crossfid_refuse_frozen_source()": """
        CREATE FUNCTION crossfid_refuse_frozen_source() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            frozen_id bigint;
            candidate bigint;
            what text;
        BEGIN
            IF TG_TABLE_NAME = 'frames' THEN
                SELECT df.dataset_id INTO frozen_id
                  FROM dataset_frames df JOIN datasets d ON d.id = df.dataset_id
                 WHERE df.frame_id = OLD.id AND d.frozen
                 ORDER BY df.dataset_id LIMIT 1;
                what := format('frame %s is a member of', OLD.id);
            ELSIF TG_TABLE_NAME = 'tasks' THEN
                SELECT df.dataset_id INTO frozen_id
                  FROM frames f
                  JOIN dataset_frames df ON df.frame_id = f.id
                  JOIN datasets d ON d.id = df.dataset_id
                 WHERE f.task_id = OLD.id AND d.frozen
                 ORDER BY df.dataset_id LIMIT 1;
                what := format('task %s (%s) has frames in', OLD.id, OLD.external_id);
            ELSIF TG_TABLE_NAME = 'materials' THEN
                -- one probe of dataset_frames(dataset_id, material_id) per frozen dataset
                FOR candidate IN SELECT id FROM datasets WHERE frozen ORDER BY id LOOP
                    PERFORM 1 FROM dataset_frames WHERE dataset_id = candidate AND material_id = OLD.id LIMIT 1;
                    IF FOUND THEN
                        frozen_id := candidate;
                        EXIT;
                    END IF;
                END LOOP;
                what := format('material %s (id %s) has frames in', OLD.external_id, OLD.id);
            ELSIF TG_TABLE_NAME = 'curation_runs' THEN
                SELECT id INTO frozen_id FROM datasets
                 WHERE curation_run_id = OLD.id AND frozen ORDER BY id LIMIT 1;
                what := format('curation run %s is the run of', OLD.id);
            ELSIF TG_TABLE_NAME = 'frame_decisions' THEN
                IF TG_OP = 'UPDATE' THEN
                    candidate := NEW.run_id;
                END IF;
                SELECT id INTO frozen_id FROM datasets
                 WHERE curation_run_id IN (OLD.run_id, candidate) AND frozen
                 ORDER BY id LIMIT 1;
                what := format('the decision of curation run %s on frame %s belongs to', OLD.run_id, OLD.frame_id);
            ELSE
                RAISE EXCEPTION 'crossfid_refuse_frozen_source: unexpected table %', TG_TABLE_NAME;
            END IF;
            IF frozen_id IS NULL THEN
                RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END IF;
            IF TG_OP = 'UPDATE'
               AND (to_jsonb(NEW) - coalesce(TG_ARGV, '{}')) = (to_jsonb(OLD) - coalesce(TG_ARGV, '{}')) THEN
                RETURN NEW;  -- nothing a frozen dataset depends on changes
            END IF;
            RAISE EXCEPTION '% frozen %: it cannot be changed (% on %); frozen datasets are immutable, '
                            'ingest corrected data as new tasks and freeze a new dataset version',
                what, crossfid_dataset_label(frozen_id), TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'integrity_constraint_violation';
        END
        $$
    """,
    "crossfid_refuse_frozen_decisions_insert()": """
        CREATE FUNCTION crossfid_refuse_frozen_decisions_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            frozen_id bigint;
            run bigint;
        BEGIN
            SELECT d.id, d.curation_run_id INTO frozen_id, run
              FROM datasets d
             WHERE d.frozen AND d.curation_run_id IN (SELECT DISTINCT run_id FROM new_decisions)
             ORDER BY d.id LIMIT 1;
            IF frozen_id IS NOT NULL THEN
                RAISE EXCEPTION 'curation run % is the run of frozen %: its decisions cannot be changed '
                                '(INSERT on frame_decisions)', run, crossfid_dataset_label(frozen_id)
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NULL;
        END
        $$
    """,
    "crossfid_refuse_truncate_frozen()": """
        CREATE FUNCTION crossfid_refuse_truncate_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            frozen_id bigint;
        BEGIN
            SELECT id INTO frozen_id FROM datasets WHERE frozen ORDER BY id LIMIT 1;
            IF frozen_id IS NOT NULL THEN
                RAISE EXCEPTION '% cannot be truncated: frozen % (and maybe others) depends on it',
                    TG_TABLE_NAME, crossfid_dataset_label(frozen_id)
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NULL;
        END
        $$
    """,
}

_ROW = "FOR EACH ROW"
_STATEMENT = "FOR EACH STATEMENT"

#: (name, table, timing and events, level, function call); created in order, dropped in reverse
TRIGGERS = [
    (
        "split_subsets_frozen",
        "split_subsets",
        "BEFORE INSERT OR UPDATE OR DELETE",
        _ROW,
        "crossfid_guard_split_subsets()",
    ),
    ("splits_freeze_check", "splits", "BEFORE INSERT OR UPDATE", _ROW, "crossfid_check_split_freeze()"),
    (
        "frames_frozen",
        "frames",
        "BEFORE UPDATE OR DELETE",
        _ROW,
        "crossfid_refuse_frozen_source('volume', 'energy_per_atom', 'max_force')",
    ),
    (
        "tasks_frozen",
        "tasks",
        "BEFORE UPDATE OR DELETE",
        _ROW,
        "crossfid_refuse_frozen_source('ingest_run_id', 'raw_document_id')",
    ),
    ("materials_frozen", "materials", "BEFORE UPDATE OR DELETE", _ROW, "crossfid_refuse_frozen_source('n_elements')"),
    ("curation_runs_frozen", "curation_runs", "BEFORE UPDATE OR DELETE", _ROW, "crossfid_refuse_frozen_source()"),
    ("frame_decisions_frozen", "frame_decisions", "BEFORE UPDATE OR DELETE", _ROW, "crossfid_refuse_frozen_source()"),
    (
        "frame_decisions_frozen_insert",
        "frame_decisions",
        "AFTER INSERT",
        f"REFERENCING NEW TABLE AS new_decisions {_STATEMENT}",
        "crossfid_refuse_frozen_decisions_insert()",
    ),
    *(
        (f"{table}_no_truncate_frozen", table, "BEFORE TRUNCATE", _STATEMENT, "crossfid_refuse_truncate_frozen()")
        for table in ("materials", "tasks", "frames", "curation_runs", "frame_decisions", "datasets", "splits")
    ),
]


def upgrade() -> None:
    for ddl in FUNCTIONS.values():
        op.execute(ddl)
    op.execute(PARENT_FUNCTION)
    # revision 0002's split_subsets_frozen covered UPDATE and DELETE only
    op.execute("DROP TRIGGER split_subsets_frozen ON split_subsets")
    for name, table, when, level, function in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} {when} ON {table} {level} EXECUTE FUNCTION {function}")


def downgrade() -> None:
    for name, table, *_ in reversed(TRIGGERS):
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    op.execute(PARENT_FUNCTION_0002)
    op.execute(
        "CREATE TRIGGER split_subsets_frozen BEFORE UPDATE OR DELETE ON split_subsets "
        "FOR EACH ROW EXECUTE FUNCTION crossfid_refuse_frozen_parent('splits', 'split_id')"
    )
    for signature in reversed(FUNCTIONS):
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")

"""The SQL cookbook of docs/sql.md: every example runs through ``crossfid sql`` and stays on its indexes.

Each ```sql block of the document is split into statements; each runs as the unprivileged
reader. A statement preceded by ``-- uses: ix_a, ix_b`` must have a plan that uses those
indexes when sequential scans are disabled (so the index path exists for the planner to take
at scale; on a small test database it would rightly prefer sequential scans).
"""

from __future__ import annotations

import json

import psycopg
import pytest
from support.cookbook import cookbook
from typer.testing import CliRunner

from crossfid.cli import app

STATEMENTS = cookbook()


def test_the_cookbook_has_the_analysts_queries_on_their_indexes():
    indexed = [uses for _, uses in STATEMENTS if uses]
    assert len(STATEMENTS) >= 10 and len(indexed) >= 4
    assert not [s for s, _ in STATEMENTS if "= ANY(" in s.replace(" ", "").upper().replace("=ANY(", "= ANY(")]


@pytest.fixture
def cli(database_url, monkeypatch, tmp_path):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, (args, result.output, result.exception)
        return result.output

    invoke("db", "init")
    return invoke


def test_every_cookbook_query_runs_as_the_reader_and_uses_its_indexes(cli, database_url):
    for statement, _ in STATEMENTS:
        assert isinstance(json.loads(cli("sql", statement, "--format", "json")), list), statement
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        for statement, uses in STATEMENTS:
            if not uses:
                continue
            plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {statement}"))
            missing = [name for name in uses if name not in plan]
            assert not missing, f"{missing} not in the plan of\n{statement}\n{plan}"


def test_an_element_filter_with_any_cannot_use_the_gin_index(database_url, cli):
    with psycopg.connect(database_url) as conn:
        conn.execute("SET enable_seqscan = off")
        explain = "EXPLAIN SELECT id FROM materials WHERE {}"
        contains = "\n".join(r[0] for r in conn.execute(explain.format("elements @> ARRAY['Fe']")))
        any_form = "\n".join(r[0] for r in conn.execute(explain.format("'Fe' = ANY(elements)")))
    assert "ix_materials_elements" in contains and "ix_materials_elements" not in any_form

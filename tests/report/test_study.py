"""``crossfid report study`` on a small study made with the real pipeline, and in headless Chromium.

One database per server and module: a small multi-fidelity demo corpus (with elemental phases), ingested,
curated on Dask, frozen and split 6:2:2 with nested subsets; methods 3 and 4 trained for two epochs; the
transferability and element-importance analyses; test-mae on every model, density, formation and decomposition
energies on the two trained ones; and a scaling law of two methods on the subsets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from support.browser import chromium_path, dump_dom
from support.tiny_split import make_tiny_split
from typer.testing import CliRunner

from crossfid.db import migrate
from crossfid.db.engine import make_engine
from crossfid.db.models import CrossFidelityAnalysis, Dataset, ModelRow, Split
from crossfid.plots.pngdata import read_data

SECTIONS = (
    "test-mae",
    "training",
    "gradients",
    "correlation",
    "importance",
    "density",
    "formation-energy",
    "decomposition-energy",
    "scaling-law",
)
TRAINED = ("tl-frozen-atomref", "tl-refit-atomref")
CRYSTALS = ["Cu-fcc", "Si-diamond", "NaCl-rocksalt"]


class Dom(HTMLParser):
    """Tables by ``data-table`` (rows of (text, data-value, title) per cell), images, ids and the marker boxes."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[list[tuple[str, str | None, str | None]]]] = {}
        self.images: list[dict[str, str | None]] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.missing: dict[str, str] = {}
        self.errors: str | None = None
        self._table: str | None = None
        self._cell: list | None = None
        self._missing: str | None = None
        self._in_errors = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.elements.append((tag, a))
        if tag == "table":
            self._table = a.get("data-table")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td" and self._table is not None:
            self._cell = ["", a.get("data-value"), a.get("title")]
        elif tag == "img":
            self.images.append(a)
        elif tag == "p" and "data-missing" in a:
            self._missing = a["data-missing"]
            self.missing[self._missing] = ""
        elif tag == "pre" and a.get("id") == "errors":
            self._in_errors, self.errors = True, ""

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "td" and self._cell is not None:
            self.tables[self._table][-1].append(tuple(self._cell))
            self._cell = None
        elif tag == "p":
            self._missing = None
        elif tag == "pre":
            self._in_errors = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._missing is not None:
            self.missing[self._missing] += data
        if self._in_errors:
            self.errors += data

    def rows(self, table: str) -> list[list[tuple[str, str | None, str | None]]]:
        return [row for row in self.tables[table] if row]

    def attributes(self, element_id: str) -> dict[str, str | None]:
        return next(a for _, a in self.elements if a.get("id") == element_id)


# --------------------------------------------------------------------------- the study database


@pytest.fixture(scope="session")
def study_corpus(tmp_path_factory):
    """Six materials at GGA(+U) and r2SCAN with their elemental phases, short relaxations, no flaws."""
    from crossfid.demo.generator import DemoSettings, FlawRates, generate_demo_corpus

    settings = DemoSettings(
        max_steps=3,
        static_rate=0.0,
        single_fidelity_fraction=0.0,
        flaws=FlawRates(
            final_energy_mismatch=0.0, high_energy=0.0, scf_unconverged=0.0, missing_forces=0.0, near_duplicate=0.0
        ),
    )
    path = tmp_path_factory.mktemp("study-corpus") / "corpus.jsonl.gz"
    return generate_demo_corpus(path, n_materials=6, seed=5, settings=settings)


def _build_study(engine, url: str, corpus, client) -> int:
    from crossfid.benchmarks.leaderboard import refresh
    from crossfid.benchmarks.relax_jobs import RelaxSettings
    from crossfid.benchmarks.scaling_runs import fit_and_store, scaling_points
    from crossfid.benchmarks.suite import DecompositionEnergy, Density, FormationEnergy, TestSetMae
    from crossfid.referencing.analysis_runs import run_importance, run_transferability
    from crossfid.training.hyperparameters import Hyperparameters
    from crossfid.training.runs import TrainRequest, train_split

    split_id = make_tiny_split(engine, url, corpus, client, subsets=(8, 16))
    for method in TRAINED:
        request = TrainRequest(
            split=split_id, method=method, hyperparameters=Hyperparameters(epochs=2, batch_size=8), device="cpu"
        )
        assert train_split(engine, request).status == "completed"
    run_transferability(engine, ["GGA", "GGA+U"], split_id, plot=False)
    run_importance(engine, ["GGA", "GGA+U"], ["r2SCAN"], plot=False)
    assert not refresh(engine, split_id, benchmarks={"test-mae": TestSetMae()}, client=client).failed
    quick = RelaxSettings(fmax=0.1, steps=60)
    suite = {
        "density": Density(quick, CRYSTALS),
        "formation-energy": FormationEnergy(quick),
        "decomposition-energy": DecompositionEnergy(quick),
    }
    summary = refresh(engine, split_id, benchmarks=suite, models=["run-1-best", "run-2-best"], client=client)
    assert not summary.failed, summary.failed
    hp = Hyperparameters(epochs=1, batch_size=8)
    points = scaling_points(engine, split_id, ["scratch", "tl-refit-atomref"], [8, 16], hp, device="cpu")
    fit_and_store(engine, split_id, points, min_size=0)
    return split_id


@pytest.fixture(scope="module")
def study(server_url, study_corpus, dask_client, tmp_path_factory):
    """(database URL, engine, output folder) of the study, reported once through the command line."""
    name = f"crossfid_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    home = tmp_path_factory.mktemp("study-home")
    try:
        migrate.upgrade(engine)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("CROSSFID_HOME", str(home))
            _build_study(engine, url, study_corpus, dask_client)
        out = tmp_path_factory.mktemp("study-report") / "report"
        from crossfid.cli import app

        result = CliRunner().invoke(
            app,
            ["report", "study", "--split", "tiny@0", "--out", str(out)],
            env={"CROSSFID_DATABASE_URL": url, "CROSSFID_HOME": str(home)},
        )
        assert result.exit_code == 0, (result.output, result.exception)
        assert "wrote" in result.output and "demo data" in result.output
        yield url, engine, out
    finally:
        engine.dispose()
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def page(study) -> Dom:
    return Dom((study[2] / "study.html").read_text(encoding="utf-8"))


def _newest_metrics(engine, benchmark: str) -> dict[str, dict[str, float | None]]:
    """model name → metric → value of the model's newest completed ``benchmark`` run on the split (plain SQL)."""
    query = text(
        """
        SELECT m.name, bm.name, bm.value FROM benchmark_metrics bm
        JOIN benchmark_runs br ON br.id = bm.run_id JOIN models m ON m.id = br.model_id
        WHERE br.benchmark = :b AND br.status = 'completed' AND br.id = (
            SELECT max(id) FROM benchmark_runs x WHERE x.model_id = br.model_id AND x.benchmark = :b
              AND x.status = 'completed')
        """
    )
    out: dict[str, dict[str, float | None]] = {}
    with engine.connect() as conn:
        for model, metric, value in conn.execute(query, {"b": benchmark}):
            out.setdefault(model, {})[metric] = value
    return out


# --------------------------------------------------------------------------- the tables


def test_test_mae_table_equals_the_database(study, page):
    _, engine, _ = study
    stored = _newest_metrics(engine, "test-mae")
    rows = page.rows("test-mae")
    models = [row[1][0] for row in rows]
    assert models == ["chgnet-0.3.0", "chgnet-r2scan", "run-1-best", "run-2-best"]
    assert [row[0][0] for row in rows] == [
        "pretrained",
        "pretrained",
        "tl-frozen-atomref (m3)",
        "tl-refit-atomref (m4)",
    ]
    for row in rows:
        model = row[1][0]
        for index, metric in enumerate(("energy_mae", "force_mae", "stress_mae", "magmom_mae"), start=3):
            shown = None if row[index][1] is None else float(row[index][1])
            assert shown == stored[model].get(metric), (model, metric)  # None: not measured (shown as —)
        assert row[3][1] is not None and row[4][1] is not None
    # the trained models' rows agree with their training runs' own test metrics (same weights, same frames)
    with Session(engine) as session:
        for model in ("run-1-best", "run-2-best"):
            row = next(r for r in rows if r[1][0] == model)
            run = session.scalars(select(ModelRow).where(ModelRow.name == model)).one()
            test_metrics = session.execute(
                text("SELECT test_metrics FROM training_runs WHERE id = :id"), {"id": run.run_id}
            ).scalar_one()
            assert float(row[3][1]) == pytest.approx(test_metrics["energy_mae"], rel=1e-3)


def test_benchmark_training_analysis_and_scaling_tables_equal_the_database(study, page):
    _, engine, _ = study
    for benchmark, column, metric in (
        ("density", 2, "density_mae"),
        ("formation-energy", 2, "formation_mae"),
        ("decomposition-energy", 2, "decomposition_mae"),
    ):
        stored = _newest_metrics(engine, benchmark)
        rows = page.rows(benchmark)
        assert [r[0][0] for r in rows] == ["run-1-best", "run-2-best"]
        for row in rows:
            assert float(row[column][1]) == stored[row[0][0]][metric]
    with engine.connect() as conn:
        best = dict(
            conn.execute(text("SELECT id, best_val_energy_mae FROM training_runs WHERE subset_size IS NULL")).all()
        )
        slopes = dict(
            conn.execute(
                text(
                    "SELECT br.method || ' ' || bm.name, bm.value FROM benchmark_metrics bm JOIN benchmark_runs br "
                    "ON br.id = bm.run_id WHERE br.benchmark = 'scaling-law' AND bm.name LIKE '%_slope'"
                )
            ).all()
        )
    training = page.rows("training")
    assert {int(r[0][1]): float(r[5][1]) for r in training} == best
    fits = page.rows("scaling-fits")
    shown = {f"{r[0][0]} {r[1][0].split()[0]}_slope": float(r[2][1]) for r in fits}
    assert shown == slopes
    assert {r[2][0] for r in page.rows("crossovers")} == {"energy", "force"}
    with Session(engine) as session:
        analysis = session.scalars(
            select(CrossFidelityAnalysis).where(CrossFidelityAnalysis.kind == "transferability")
        ).one()
    pearson = page.rows("correlation")[0]
    assert float(pearson[1][1]) == analysis.result["raw"]["pearson"]
    assert float(pearson[2][1]) == analysis.result["referenced"]["pearson"]
    assert page.rows("importance") and page.rows("gradients")


# --------------------------------------------------------------------------- figures, provenance, demo note


def test_every_figure_is_embedded_and_in_the_markdown(study, page):
    _, engine, out = study
    alts = [image["alt"] for image in page.images]
    assert alts == [
        "energy MAE per epoch of each method (validation solid, training dashed)",
        "first-epoch gradient ranges per layer and method",
        "raw vs referenced energies, GGA/GGA+U vs r2SCAN",
        "element importance (no corrections)",
        "element importance (MP2020 corrections)",
        "density ratios: run-1-best",
        "density ratios: run-2-best",
        "formation energy parity",
        "decomposition energy parity",
        "scaling law: validation energy MAE vs training frames",
    ]
    assert all(image["src"].startswith("data:image/png;base64,") for image in page.images)
    assert page.missing == {}
    markdown = (out / "study.md").read_text(encoding="utf-8")
    for alt in alts:
        assert f"![{alt}](study-figures/" in markdown
    figures = sorted(p.name for p in (out / "study-figures").iterdir())
    assert len(figures) == len(alts) and all(name.endswith(".png") for name in figures)
    # the figures show the stored numbers
    ratios = read_data(out / "study-figures" / "density-run-2-best.png")["ratios"]
    with engine.connect() as conn:
        stored = (
            conn.execute(
                text(
                    "SELECT (bi.result->>'ratio')::float8 FROM benchmark_items bi "
                    "JOIN benchmark_runs br ON br.id = bi.run_id JOIN models m ON m.id = br.model_id "
                    "WHERE m.name = 'run-2-best' AND br.benchmark = 'density' AND bi.ok ORDER BY bi.item"
                )
            )
            .scalars()
            .all()
        )
    assert ratios == pytest.approx(stored)
    parity = read_data(out / "study-figures" / "formation-energy-parity.png")
    assert set(parity["models"]) == {"run-1-best", "run-2-best"}
    scaling = read_data(out / "study-figures" / "scaling-law.png")
    assert set(scaling["methods"]) == {"scratch", "tl-refit-atomref"}


def test_provenance_hashes_and_run_ids_are_present(study, page):
    _, engine, out = study
    html = (out / "study.html").read_text(encoding="utf-8")
    markdown = (out / "study.md").read_text(encoding="utf-8")
    with Session(engine) as session:
        dataset = session.scalars(select(Dataset)).one()
        split = session.scalars(select(Split)).one()
        models = session.scalars(select(ModelRow).where(ModelRow.role.in_(("base", "best")))).all()
        hashes = [dataset.content_hash, split.content_hash]
        hashes += [m.sha256 for m in models if m.run_id is None or m.name in ("run-1-best", "run-2-best")]
        run_ids = session.execute(text("SELECT id FROM benchmark_runs WHERE status = 'completed'")).scalars().all()
    for digest in hashes:
        assert digest in html and digest in markdown
    # short forms in the tables, the full hash as the tooltip
    sha = page.rows("test-mae")[3][2]
    assert len(sha[0]) == 12 and sha[2].startswith(sha[0]) and len(sha[2]) == 64
    for run_id in run_ids:
        assert f"benchmark run {run_id}" in html and f"benchmark run {run_id}" in markdown


def test_the_demo_is_reported_as_a_surrogate(study, page):
    _, _, out = study
    assert page.attributes("surrogate")["class"] == "surrogate"
    html = (out / "study.html").read_text(encoding="utf-8")
    assert html.index('id="surrogate"') < html.index('<section id="test-mae">')
    assert "come from a surrogate model" in (out / "study.md").read_text(encoding="utf-8")


def test_the_page_has_no_network_and_exact_csp(study, page):
    for tag, attributes in page.elements:
        assert tag not in ("link", "iframe", "object", "embed", "base")
        assert not (tag == "script" and "src" in attributes)
        if "href" in attributes:
            assert attributes["href"].startswith("#")
    csp = next(a["content"] for t, a in page.elements if t == "meta" and a.get("http-equiv"))
    assert "default-src 'none'" in csp and "img-src data:" in csp and "unsafe-inline" not in csp


# --------------------------------------------------------------------------- in headless Chromium


@pytest.fixture
def chromium() -> str:
    return chromium_path()


def test_the_page_loads_in_chromium_without_errors_and_every_figure_decodes(study, page, chromium, tmp_path):
    _, _, out = study
    html, console = dump_dom(chromium, (out / "study.html").as_uri(), tmp_path / "profile")
    dom = Dom(html)
    assert console == [] and dom.errors == ""
    check = dom.attributes("figure-check")
    assert check.get("data-total") == check.get("data-decoded") == str(len(page.images)), check
    assert len(dom.images) == len(page.images) == 10


# --------------------------------------------------------------------------- missing data and errors


def test_missing_sections_are_explained_and_an_unknown_split_is_an_error(
    invoke, engine, database_url, r2scan_corpus, dask_client, monkeypatch, tmp_path
):
    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    make_tiny_split(engine, database_url, r2scan_corpus, dask_client)
    result = invoke("report", "study", "--split", "tiny@0", "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, (result.output, result.exception)
    dom = Dom((tmp_path / "report" / "study.html").read_text(encoding="utf-8"))
    assert set(dom.missing) == set(SECTIONS)
    assert dom.images == []
    assert "crossfid benchmark scaling-law" in dom.missing["scaling-law"]
    assert dom.missing["density"].startswith("not run: crossfid leaderboard refresh --split tiny@0 --benchmark density")
    assert "crossfid analyze transferability --source GGA,GGA+U --target tiny@0" in dom.missing["correlation"]
    markdown = (tmp_path / "report" / "study.md").read_text(encoding="utf-8")
    assert all(text_ in markdown for text_ in dom.missing.values())

    from crossfid.curation.splits import SplitError
    from crossfid.exit_codes import ExitCode

    missing = invoke("report", "study", "--split", "tiny@7", "--out", str(tmp_path / "other"))
    assert missing.exit_code == ExitCode.ERROR and isinstance(missing.exception, SplitError)
    assert not (tmp_path / "other").exists()
    # the real command prints one line and exits with the error status
    env = {**os.environ, "CROSSFID_DATABASE_URL": database_url}
    proc = subprocess.run(
        [sys.executable, "-m", "crossfid.cli", "report", "study", "--split", "nosuch@0", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == ExitCode.ERROR, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "nosuch" in proc.stderr
    assert Path(tmp_path / "x").exists() is False

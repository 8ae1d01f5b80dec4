"""Curation on a real Dask LocalCluster against real PostgreSQL, on the demo corpus."""

from __future__ import annotations

import gzip
import json
import os
import signal

import pytest
from dask.distributed import Client, LocalCluster
from sqlalchemy import text

from crossfid.curation.datasets import freeze_dataset
from crossfid.curation.pipeline import decisions_of, run_curation

#: the rule each injected flaw of the demo generator must be rejected by
FLAW_RULES = {
    "scf_unconverged": "electronic_convergence",
    "missing_forces": "complete_labels",
    "high_energy": "energy_window",
    "near_duplicate": "duplicate",
    "final_energy_mismatch": "final_frame_agreement",
}
RULE_REJECTIONS = {
    "electronic_convergence",
    "complete_labels",
    "energy_window",
    "final_frame_agreement",
    "hubbard_consistency",
}


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as c:
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster) as c:
        yield c


def _flaws(corpus_path):
    """(task external id, ionic step or None, kind) of every injected flaw."""
    flaws = []
    with gzip.open(corpus_path, "rt") as handle:
        for line in handle:
            document = json.loads(line)
            for flaw in document.get("flaws", []):
                flaws.append((flaw["task_id"], flaw.get("ionic_step"), flaw["kind"]))
    return flaws


def test_the_demo_corpus_is_rejected_exactly_where_it_was_flawed(demo_engine, demo_corpus, database_url, client):
    engine = demo_engine
    runs = {}
    for fidelities in (["GGA", "GGA+U"], ["r2SCAN"]):
        summary = run_curation(engine, database_url, fidelities, client=client)
        runs[tuple(fidelities)] = summary.run_id
        assert summary.frames == sum(
            1
            for _ in engine.connect().execute(
                text("SELECT 1 FROM frames f JOIN tasks t ON t.id = f.task_id WHERE t.fidelity = ANY(:f)"),
                {"f": fidelities},
            )
        )
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT t.external_id, f.ionic_step, d.accepted, d.rule FROM frame_decisions d "
                "JOIN frames f ON f.id = d.frame_id JOIN tasks t ON t.id = f.task_id"
            )
        ).all()
    decision = {(task, step): (accepted, rule) for task, step, accepted, rule in rows}
    flaws = _flaws(demo_corpus.path)
    assert {kind for _, _, kind in flaws} == set(FLAW_RULES)  # the corpus exercises every rule
    flawed = set()
    for task, step, kind in flaws:
        if step is None:  # a whole task
            frames = [key for key in decision if key[0] == task]
            assert frames and all(decision[key] == (False, FLAW_RULES[kind]) for key in frames), task
            flawed.update(frames)
        else:
            assert decision[task, step] == (False, FLAW_RULES[kind]), (task, step, kind)
            flawed.add((task, step))
    by_rules = {key for key, (accepted, rule) in decision.items() if rule in RULE_REJECTIONS}
    assert by_rules <= flawed  # nothing unflawed is rejected by rules 1-5
    assert all(accepted for key, (accepted, rule) in decision.items() if rule == "reference_frame")


def test_one_worker_and_two_workers_decide_identically(demo_engine, database_url):
    results, hashes = [], []
    for n in (1, 2):
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
            Client(cluster) as client,
        ):
            summary = run_curation(demo_engine, database_url, ["r2SCAN"], client=client, partition_frames=40)
            results.append(decisions_of(demo_engine, summary.run_id))
            info = freeze_dataset(demo_engine, summary.run_id, f"workers-{n}", energy_label="uncorrected")
            hashes.append(info.content_hash)
    assert results[0] == results[1] and len(results[0]) > 0
    assert hashes[0] == hashes[1]


def test_a_killed_worker_costs_a_retry_not_a_wrong_result(demo_engine, database_url, cluster):
    with Client(cluster) as client:
        reference = run_curation(demo_engine, database_url, ["GGA", "GGA+U"], client=client, partition_frames=30)
        killed = []

        def kill_a_worker(done: int, total: int) -> None:
            if done and not killed:
                pid = next(iter(client.run(os.getpid).values()))
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        disturbed = run_curation(
            demo_engine, database_url, ["GGA", "GGA+U"], client=client, partition_frames=30, progress=kill_a_worker
        )
        assert killed, "the run finished before a worker could be killed"
        assert decisions_of(demo_engine, disturbed.run_id) == decisions_of(demo_engine, reference.run_id)
        with demo_engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM curation_runs WHERE id = :r"), {"r": disturbed.run_id})
            assert status.scalar_one() == "completed"


def test_fast_and_reference_dedupe_decide_identically_on_the_demo_corpus(demo_engine, database_url, client):
    fast = run_curation(demo_engine, database_url, ["r2SCAN"], client=client, dedupe="fast")
    plain = run_curation(demo_engine, database_url, ["r2SCAN"], client=client, dedupe="reference")
    assert decisions_of(demo_engine, fast.run_id) == decisions_of(demo_engine, plain.run_id)
    assert fast.dedupe.fit_calls < plain.dedupe.fit_calls

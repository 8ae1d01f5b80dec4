"""Progress of long steps: one plain line per finished unit off a terminal, a rich bar on one."""

from __future__ import annotations

import io
import re

from rich.console import Console
from sqlalchemy import select
from sqlalchemy.orm import Session
from support.tiny_split import make_tiny_split

from crossfid.cli.render import progress
from crossfid.plots.pngdata import read_data


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120), buffer


def test_plain_lines_one_per_finished_unit():
    console, buffer = _console(terminal=False)
    with progress(console) as steps:
        relaxed = steps.step("density chgnet-0.3.0", count="{done}/{total} relaxed")
        for done in (0, 1, 1, 2, 3):  # a start report and a repeated count print nothing
            relaxed(done, 3)
        epochs = steps.step("train scratch", 2, count="epoch {done}/{total}")
        epochs(1, detail="train e 12.3 meV/atom (4 s)")
    assert buffer.getvalue().splitlines() == [
        "density chgnet-0.3.0: 1/3 relaxed",
        "density chgnet-0.3.0: 2/3 relaxed",
        "density chgnet-0.3.0: 3/3 relaxed",
        "train scratch: epoch 1/2 train e 12.3 meV/atom (4 s)",
    ]


def test_labelled_reports_get_one_step_per_label():
    console, buffer = _console(terminal=False)
    with progress(console) as steps:
        report = steps.reporter(count="{done}/{total} relaxed")
        for label, done in (("density a", 0), ("density a", 1), ("density b", 1), ("density a", 2)):
            report(label, done, 2)
    assert buffer.getvalue().splitlines() == [
        "density a: 1/2 relaxed",
        "density b: 1/2 relaxed",
        "density a: 2/2 relaxed",
    ]


def test_a_terminal_gets_the_bar_not_lines():
    console, buffer = _console(terminal=True)
    with progress(console) as steps:
        relaxed = steps.step("density chgnet-0.3.0", count="{done}/{total} relaxed")
        for done in range(4):
            relaxed(done, 3, detail="Cu-fcc")
    text = buffer.getvalue()
    assert "━" in text and "density chgnet-0.3.0" in text and "3/3" in text and "Cu-fcc" in text
    assert "relaxed" not in text  # the plain lines' wording is not printed


def _lines(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


def test_curate_prints_material_counts(invoke, demo_engine):
    result = invoke("curate", "--fidelity", "GGA,GGA+U", "--workers", "0")
    assert result.exit_code == 0, result.output
    lines = _lines(result.output, "curate GGA,GGA+U: ")
    counts = [tuple(map(int, re.search(r": (\d+)/(\d+) materials$", line).groups())) for line in lines]
    assert counts, result.output
    done = [d for d, _ in counts]
    assert done == sorted(set(done)) and done[-1] == counts[-1][1]  # one line per finished unit, up to the total


def test_train_and_scaling_law_print_one_line_per_epoch(
    invoke, engine, database_url, r2scan_corpus, dask_client, monkeypatch, tmp_path
):
    from crossfid.db.models import BenchmarkMetric, BenchmarkRun

    monkeypatch.setenv("CROSSFID_HOME", str(tmp_path / "home"))
    make_tiny_split(engine, database_url, r2scan_corpus, dask_client, subsets=(8, 16))

    args = ("--split", "tiny", "--method", "tl-frozen-atomref", "--epochs", "2", "--batch-size", "8", "--device", "cpu")
    result = invoke("train", *args)
    assert result.exit_code == 0, result.output
    lines = _lines(result.output, "train tl-frozen-atomref: ")
    assert len(lines) == 2, result.output
    for epoch, line in enumerate(lines, start=1):
        pattern = rf"epoch {epoch}/2 train e [\d.]+ meV/atom val e [\d.]+ meV/atom \(\d+ s\)"
        assert re.fullmatch(rf"train tl-frozen-atomref: {pattern}", line), line

    figure = tmp_path / "scaling.png"
    methods = ("--method", "scratch", "--method", "tl-refit-atomref")
    args = ("--split", "tiny", *methods, "--sizes", "8,16", "--epochs", "1", "--batch-size", "8", "--min-size", "0")
    result = invoke("benchmark", "scaling-law", *args, "--device", "cpu", "--out", str(figure))
    assert result.exit_code == 0, result.output
    for method in ("scratch", "tl-refit-atomref"):
        for size in (8, 16):
            lines = _lines(result.output, f"scaling-law {method} n={size}: ")
            assert len(lines) == 1 and lines[0].split(": ", 1)[1].startswith("epoch 1/1 train e "), result.output
    crossing = _lines(result.output, "scratch vs tl-refit-atomref (energy): ")
    assert len(crossing) == 1
    line = crossing[0]
    within = re.search(r"lines cross at ([\d,]+) frames$", line)
    assert within or line.endswith("no crossover within range (≤ 16,000 frames)"), line
    if within:
        assert int(within.group(1).replace(",", "")) <= 16_000
    assert "e+" not in result.output  # no crossing is printed in exponent form

    with Session(engine) as session:
        stored = dict(
            session.execute(
                select(BenchmarkMetric.name, BenchmarkMetric.value)
                .join(BenchmarkRun, BenchmarkRun.id == BenchmarkMetric.run_id)
                .where(BenchmarkRun.benchmark == "scaling-law", BenchmarkRun.method == "scratch")
            ).all()
        )
    assert stored["energy_crossover_limit:tl-refit-atomref"] == 16_000
    value = stored["energy_crossover:tl-refit-atomref"]
    assert (value is None) == (within is None)
    assert value is None or value <= 16_000
    drawn = read_data(figure)["crossovers"]
    assert all(c["size"] <= c["limit"] for c in drawn) and len(drawn) == (0 if within is None else 1)

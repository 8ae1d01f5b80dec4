"""The ingest summary: quarantine reasons grouped by kind (pure), and through a real ingest run."""

from __future__ import annotations

from rich.console import Console
from support import synthetic

from crossfid.ingest.loader import IngestSummary
from crossfid.ingest.records import Refusal
from crossfid.ingest.runner import EXIT_QUARANTINED, SHOWN_KINDS, group_reasons, print_summary, reason_kind, run_ingest


def row_of(text: str, needle: str) -> list[str]:
    """The cells of the table row of ``text`` that contains ``needle``."""
    line = next(line for line in text.splitlines() if needle in line)
    return [cell.strip() for cell in line.strip().strip("│").split("│")]


def test_ids_paths_and_numbers_are_not_part_of_the_kind():
    assert reason_kind("task mp-1 has no ionic steps") == "task … has no ionic steps"
    assert reason_kind("task mp-aaaaaaft has no ionic steps") == "task … has no ionic steps"
    assert reason_kind("task aaaaaaft has no ionic steps") == "task … has no ionic steps"  # bare AlphaID task id
    assert reason_kind("non-self-consistent run (ICHARG = 11): no valid total energy or stress") == (
        "non-self-consistent run (ICHARG = …): no valid total energy or stress"
    )
    assert reason_kind("cannot read /data/calcs/Si/vasprun.xml.gz: truncated") == "cannot read …: truncated"
    assert reason_kind("conflicts with stored task vasp:Si/relax#0c1a685bf1ab (run 3)") == (
        "conflicts with stored task … (run …)"
    )
    assert reason_kind("malformed JSON (Expecting value: line 1 column 5 (char 4))") == (
        "malformed JSON (Expecting value: line … column … (char …))"
    )
    assert reason_kind("ionic steps 3-7 are incomplete") == "ionic steps … are incomplete"
    assert reason_kind("energy is 1.5e+07 eV, beyond the limit of ±1e+06 eV") == (
        "energy is … eV, beyond the limit of … eV"
    )
    assert reason_kind("raw document sha 9f86d081884c7d65 differs") == "raw document sha … differs"


def test_names_with_digits_and_quoted_values_stay():
    for reason in (
        "functional 'revPBE+PADE' is not a supported fidelity",
        "unknown fidelity 'HSE(AEXX=0.345)-D3'",
        "e_0_energy of r2SCAN differs from MP2020 PBE-D3(BJ)",
        "stress must be a 3×3 array",
        "cannot read vasprun.xml.relax2: empty",
        "frame has no 'force'",
        "energy per atom in eV/atom is not finite",
    ):
        assert reason_kind(reason) == reason
    assert reason_kind("frame has no 'force'") != reason_kind("frame has no 'structure'")


def test_reasons_are_grouped_with_counts_and_an_example_location():
    reasons = {
        "task mp-1 has no ionic steps": 1,
        "task mp-2 has no ionic steps": 3,
        "task mp-3 has no ionic steps": 1,
        "non-self-consistent run (ICHARG = 11): no valid total energy or stress": 2,
        "unknown fidelity 'X'": 1,
    }
    examples = {"task mp-3 has no ionic steps": "tasks.json#item 7", "unknown fidelity 'X'": "a.json#2"}
    groups = group_reasons(reasons, examples)
    assert [(g.kind, g.count) for g in groups] == [
        ("task … has no ionic steps", 5),
        ("non-self-consistent run (ICHARG = …): no valid total energy or stress", 2),
        ("unknown fidelity 'X'", 1),
    ]
    # the example is a reason whose location is known; without one, the most frequent reason, location unknown
    assert (groups[0].example_reason, groups[0].example_location) == (
        "task mp-3 has no ionic steps",
        "tasks.json#item 7",
    )
    assert groups[1].example_location is None and groups[1].example_reason.endswith("energy or stress")
    assert group_reasons(reasons) == group_reasons(dict(reversed(list(reasons.items()))))  # order-independent
    assert group_reasons({}) == []


def test_summary_prints_one_row_per_kind():
    summary = IngestSummary(1, "docs", quarantined=4 + SHOWN_KINDS + 2)
    summary.quarantine_reasons = {f"task mp-{i} has no ionic steps": 1 for i in range(4)}
    summary.quarantine_reasons |= {f"kind {chr(97 + k)} of problem": 1 for k in range(SHOWN_KINDS + 2)}
    console = Console(record=True, width=240)
    print_summary(summary, console, {"task mp-2 has no ionic steps": "tasks.json.gz#item 2"})
    text = console.export_text()
    assert "mp-1 has" not in text
    assert row_of(text, "task … has no ionic steps") == ["task … has no ionic steps", "4", "tasks.json.gz#item 2"]
    assert row_of(text, "more kinds") == ["… 3 more kinds", "3", ""]  # 1 + SHOWN_KINDS + 2 kinds, SHOWN_KINDS shown
    assert row_of(text, "kind a of problem") == ["kind a of problem", "1", ""]  # a single reason is shown as it is


def test_run_ingest_shows_where_each_kind_was_seen(database_url, monkeypatch):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    records = [
        synthetic.bundle(0),
        Refusal("tasks.json#item 1", "task mp-11 has no ionic steps"),
        Refusal("tasks.json#item 2", "task mp-12 has no ionic steps"),
        Refusal("tasks.json#item 3", "task mp-13 has no ionic steps"),
    ]
    console = Console(record=True, width=240)
    summary, code = run_ingest("runner-test", "test", records, arguments={}, console=console)
    assert code == EXIT_QUARANTINED and summary.quarantined == 3 and summary.tasks_added == 1
    assert row_of(console.export_text(), "task … has no ionic steps") == [
        "task … has no ionic steps",
        "3",
        "tasks.json#item 1",
    ]

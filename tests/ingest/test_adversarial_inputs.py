"""Hostile and careless input: a batch never dies on one bad record, and every good record is stored.

The corpus (tests/support/adversarial.py) holds, in every source format, NaN / inf / 1e200
labels, NUL characters and lone surrogates in ids, 100,000-deep nesting, records
above the record cap, decompression bombs, billion laughs and XXE, duplicate ids
with other content, overlapping atoms and broken symlinks, each between good
records. Every format goes through the real command line (the demo corpus through
the real loader) into a real database, and every expectation of the corpus is
checked there: the refusal and its reason, or the stored task and its frames.
The first tests below check the pieces (JSON scanner, limits, caps) on their own.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
from pathlib import Path

import numpy as np
import psycopg
import pytest
from support import adversarial
from typer.testing import CliRunner

from crossfid.cli import app
from crossfid.ingest import sourceio
from crossfid.ingest.columnar import frame_block
from crossfid.ingest.records import (
    MAX_ABS_FORCE,
    Bundle,
    Frame,
    Material,
    RawDocument,
    Refusal,
    Task,
    escape_text,
    validate_bundle,
)
from crossfid.ingest.sourceio import JsonEnd, JsonSegment, Limits, scan_json

# --------------------------------------------------------------------------- the JSON scanner


def _segments(data: bytes, level: int, limits: Limits = Limits()) -> list[JsonSegment | JsonEnd]:
    return list(scan_json(io.BytesIO(data), level, limits))


@pytest.mark.parametrize("chunk", [1, 3, 17, 4096])
def test_scanner_refuses_a_deep_item_and_reads_on_at_any_chunking(monkeypatch, chunk: int) -> None:
    monkeypatch.setattr(sourceio, "_CHUNK", chunk)
    deep = b"[" * 70 + b'"x]\\\\"' + b"]" * 70  # a string of x, ] and a backslash
    edge = b"[" * 63 + b"]" * 63  # 64 levels with the top level: allowed
    text = b'{"a": {"s": "[[[{\\"\\\\"}, "deep": ' + deep + b', "edge": ' + edge + b', "b": [1, NaN]}'
    segments = _segments(text, 1)
    assert [s.problem is None for s in segments] == [True, False, True, True]
    assert "deeper than the limit of 64 levels" in segments[1].problem and segments[1].data is None
    assert segments[1].head.startswith(b' "deep"')  # kept to name the refused item
    values = [json.loads(b"{" + s.data + b"}") for s in segments if s.data is not None]
    assert values[0] == {"a": {"s": '[[[{"\\'}} and values[2]["b"][0] == 1


def test_depth_of_one_json_text_is_string_aware() -> None:
    hidden = b'["' + b"]" * 100 + b'", ' + b"[" * 70 + b"]" * 70 + b"]"  # closers in a string cannot hide depth
    assert sourceio.max_json_depth(hidden) == 71
    assert "deeper than the limit of 64" in sourceio.json_depth_problem(hidden, Limits())
    assert sourceio.max_json_depth(b'{"a": "[[[\\"[[[", "b": [[]]}') == 3
    assert sourceio.json_depth_problem(b"[" * 64 + b"]" * 64, Limits()) is None
    with pytest.raises(sourceio.RecordError, match="deeper than the limit"):
        sourceio.loads(b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_scanner_splits_documents_and_json_lines_with_line_numbers() -> None:
    text = b'\xef\xbb\xbf{\n  "a": 1\n}\n\n{"b": [2]} 42 [3]\n'
    segments = _segments(text, 0)
    assert [(s.line, json.loads(s.data)) for s in segments] == [(1, {"a": 1}), (5, {"b": [2]}), (5, 42), (5, [3])]


def test_scanner_caps_a_record_and_reports_a_cut_file() -> None:
    limits = Limits(max_record_bytes=100)
    text = b'[{"small": 1}, {"big": "' + b"x" * 1000 + b'"}, {"after": 2}, {"cut": [1, 2'
    *items, end = _segments(text, 1, limits)
    assert [i.data for i in items] == [b'{"small": 1}', None, b' {"after": 2}']
    assert "larger than the limit of 100 bytes" in items[1].problem
    assert isinstance(end, JsonEnd) and end.partial == b' {"cut": [1, 2'


def test_scanner_agrees_with_json_on_random_documents(monkeypatch) -> None:
    rng = random.Random(7)
    alphabet = ["a", "[", "]", "{", "}", ",", '"', "\\", ":", " ", "\n", "é", "\U0001f600"]

    def value(depth: int = 0):
        r = rng.random()
        if depth > 4 or r < 0.3:
            return rng.choice([1, -2.5, None, True, "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 9)))])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {"".join(rng.choice(alphabet) for _ in range(4)): value(depth + 1) for _ in range(rng.randint(0, 4))}

    for trial in range(60):
        document = {f"k{i}": value() for i in range(rng.randint(0, 6))}
        text = json.dumps(document, indent=rng.choice([None, 1]), ensure_ascii=bool(trial % 2)).encode()
        monkeypatch.setattr(sourceio, "_CHUNK", rng.choice([1, 2, 5, 64, 1 << 18]))
        members = [json.loads(b"{" + s.data + b"}") for s in _segments(text, 1)]
        assert {k: v for m in members for k, v in m.items()} == document


def test_pretty_printed_json_is_one_document_and_json_lines_are_lines(tmp_path: Path) -> None:
    pretty, lines, broken_first = tmp_path / "pretty.json", tmp_path / "lines.jsonl", tmp_path / "broken.jsonl"
    pretty.write_text(json.dumps({"a": [1, 2], "b": {"c": 3}}, indent=2))
    lines.write_text('{"a": 1}\n{"a": 2}\n')
    broken_first.write_text('{"a": 1,,}\n{"a": 2}\n')
    assert not sourceio.is_json_lines(pretty)
    assert sourceio.is_json_lines(lines) and sourceio.is_json_lines(broken_first)
    assert list(sourceio.iter_json_values(pretty)) == [("#item 0", {"a": [1, 2], "b": {"c": 3}})]
    records = list(sourceio.iter_json_values(broken_first))
    assert isinstance(records[0], Refusal) and records[0].location == "broken.jsonl:line 1"
    assert records[1] == (":line 2", {"a": 2})


# --------------------------------------------------------------------------- limits and caps


def test_limits_from_the_environment() -> None:
    assert Limits.from_env({}) == Limits(64, 256 * 2**20, 8 * 2**30)
    limits = Limits.from_env(
        {"CROSSFID_MAX_JSON_DEPTH": "10", "CROSSFID_MAX_RECORD_BYTES": "2MiB", "CROSSFID_MAX_DECOMPRESSED_BYTES": "1G"}
    )
    assert limits == Limits(10, 2 * 2**20, 10**9)
    with pytest.raises(ValueError, match="CROSSFID_MAX_RECORD_BYTES"):
        Limits.from_env({"CROSSFID_MAX_RECORD_BYTES": "lots"})
    with pytest.raises(ValueError, match="must be positive"):
        Limits.from_env({"CROSSFID_MAX_JSON_DEPTH": "0"})


def test_an_invalid_limit_stops_the_command_before_reading(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "m.json"
    path.write_text("{}")
    monkeypatch.setenv("CROSSFID_MAX_RECORD_BYTES", "lots")
    result = CliRunner().invoke(app, ["ingest", "mptrj", str(path), "--fidelity", "GGA"])
    assert result.exit_code != 0 and "CROSSFID_MAX_RECORD_BYTES: not a size: 'lots'" in str(result.exception)


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bz2", "xz"])
def test_decompressed_size_is_capped_while_streaming(tmp_path: Path, compress) -> None:
    path = tmp_path / "bomb.bin"
    path.write_bytes(compress(b"{" + b" " * 3_000_000 + b"}"))
    with sourceio.open_decompressed(path, Limits(max_decompressed_bytes=1_000_000)) as stream:
        read = 0
        with pytest.raises(sourceio.DecompressedSizeError, match="exceeds the cap of 977 KiB"):
            while chunk := stream.read(1 << 16):
                read += len(chunk)
        assert read <= 1_000_000
    with sourceio.open_decompressed(path, Limits(max_decompressed_bytes=4_000_000)) as stream:
        assert len(stream.read()) == 3_000_002


def test_vasprun_bomb_is_refused_before_it_is_held(tmp_path: Path, monkeypatch) -> None:
    from crossfid.ingest.vasp_dirs import _read_uncompressed

    path = tmp_path / "vasprun.xml.gz"
    adversarial._gzip_bomb(path, b"<modeling>", 50_000_000, b"</modeling>")
    with pytest.raises(sourceio.DecompressedSizeError):
        _read_uncompressed(path, cap=5_000_000)
    monkeypatch.setenv("CROSSFID_MAX_DECOMPRESSED_BYTES", "60MB")
    content, damaged = _read_uncompressed(path)
    assert len(content) == 50_000_021 and not damaged


# --------------------------------------------------------------------------- records


def _frame(step: int, **changes) -> Frame:
    values = dict(
        ionic_step=step,
        lattice=np.eye(3) * 4.0,
        atomic_numbers=np.array([14, 14], dtype=np.int16),
        frac_coords=np.array([[0.0, 0.0, 0.0], [0.25, 0.25, 0.25]]),
        energy=-10.0,
        forces=np.full((2, 3), 0.1),
        stress=np.eye(3),
        magmoms=np.zeros(2),
    )
    values.update(changes)
    return Frame(**values)


def test_magnitude_limits_refuse_the_frame_alone_with_value_and_limit() -> None:
    bad = {
        1: dict(forces=np.full((2, 3), 1e200)),
        2: dict(energy=1e200),
        3: dict(corrected_energy=-5e3),
        4: dict(stress=np.eye(3) * 2e5),
        5: dict(magmoms=np.array([0.0, 1e4])),
        6: dict(lattice=np.eye(3) * 2e4),
        7: dict(frac_coords=np.array([[0.0, 0.0, 0.0], [1e200, 0.0, 0.0]])),
        8: dict(n_electronic_steps=2**40),
    }
    frames = [
        _frame(0),
        *(_frame(step, **change) for step, change in bad.items()),
        _frame(9, forces=np.full((2, 3), 9e3)),
    ]
    assert frame_block(frames) is None  # the columnar fast path leaves them to the per-frame path
    assert frame_block([frames[0], frames[-1]]) is not None
    task = Task("t-1", "GGA", "PBE", "relax", frames)
    bundle = Bundle(Material.from_atomic_numbers("mp-1", [14, 14]), "here", [task])
    cleaned, refusals = validate_bundle(bundle)
    assert [f.ionic_step for f in cleaned.tasks[0].frames] == [0, 9]
    reasons = {int(r.location.rsplit(" ", 1)[1]): r.reason for r in refusals}
    assert reasons[1] == f"forces has a component of magnitude 1e+200 eV/Å, beyond the limit of {MAX_ABS_FORCE:g} eV/Å"
    assert reasons[2] == "energy per atom is 5e+199 eV/atom, beyond the limit of ±1000 eV/atom"
    assert reasons[3].startswith("corrected energy per atom is -2500 eV/atom")
    assert "stress has a component of magnitude 200000 GPa" in reasons[4]
    assert "magnetic moments has a component of magnitude 10000 μB" in reasons[5]
    assert "lattice vector 1 is 20000 Å long" in reasons[6]
    assert "fractional coordinates has a component of magnitude 1e+200" in reasons[7]
    assert reasons[8] == f"number of electronic steps is {2**40}, outside 0 to {2**31 - 1}"


def test_unstorable_text_is_refused_with_an_escaped_reason() -> None:
    frames = [_frame(0)]
    tasks = [
        Task("t-\x00", "GGA", "PBE", "relax", frames),
        Task("t-ok", "GGA", "PBE", "relax", frames, input_parameters={"SYSTEM": "a\ud800b"}),
        Task("t-good", "GGA", "PBE", "relax", frames, code_version="6.4"),
    ]
    raw = RawDocument(b"{}", "json", "file\udcff.json#t")  # a file name that is not UTF-8
    bundle = Bundle(Material.from_atomic_numbers("mp-1", [14, 14]), "file\udcff.json#t", tasks, raw=raw)
    cleaned, refusals = validate_bundle(bundle)
    assert [t.external_id for t in cleaned.tasks] == ["t-good"]
    assert cleaned.location == "file\\udcff.json#t" and cleaned.raw.location == "file\\udcff.json#t"
    assert refusals[0].reason == 'task id "t-\\u0000" contains a NUL character (U+0000), which cannot be stored as text'
    assert refusals[1].reason.startswith("input parameters['SYSTEM'] \"a\\ud800b\" contains a lone surrogate (U+D800)")
    for refusal in refusals:
        text = refusal.location + refusal.reason
        assert escape_text(text) == text  # nothing unstorable left
    material = Bundle(Material("mp-\x00", "Si", ("Si",)), "x", tasks[2:])
    assert validate_bundle(material)[0] is None
    assert validate_bundle(material)[1][0].reason.startswith('material id "mp-\\u0000" contains a NUL')
    refusal = Refusal("at \x00", "why \ud800", raw_text="t\x00", raw_document={"k\x00": ["v\ud800"]})
    assert (refusal.location, refusal.reason, refusal.raw_text) == ("at \\u0000", "why \\ud800", "t\\u0000")
    assert refusal.raw_document == {"k\\u0000": ["v\\ud800"]}


# --------------------------------------------------------------------------- the corpus, end to end


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> adversarial.Corpus:
    return adversarial.write_corpus(tmp_path_factory.mktemp("adversarial"))


@pytest.fixture
def limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in adversarial.TEST_LIMITS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def invoke(database_url: str, monkeypatch: pytest.MonkeyPatch, limits: None):
    monkeypatch.setenv("CROSSFID_DATABASE_URL", database_url)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args))

    return run


def _commands(fmt: adversarial.Format) -> list[list[str]]:
    files = [str(p) for p in fmt.inputs]
    if fmt.name == "mptrj":
        return [["ingest", "mptrj", file, "--fidelity", "GGA"] for file in files]
    if fmt.name == "extxyz":
        return [["ingest", "extxyz", *files, "--fidelity", "GGA"]]
    return [["ingest", fmt.name, *files]]


def _check(fmt: adversarial.Format, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tasks = conn.execute(
            "SELECT t.external_id, count(f.id) FROM tasks t LEFT JOIN frames f ON f.task_id = t.id GROUP BY 1"
        ).fetchall()
        quarantine = conn.execute("SELECT location, reason FROM quarantine").fetchall()
    stored = dict(tasks)
    failures = []
    for expect in fmt.expects:
        if expect.outcome == "stored":
            hits = [k for k in stored if k == expect.task or (expect.task.endswith("#") and k.startswith(expect.task))]
            if len(hits) != 1 or stored[hits[0]] != expect.frames:
                failures.append(f"{expect.case}: task {expect.task} with {expect.frames} frames; stored {hits}")
            continue
        found = [
            (location, reason)
            for location, reason in quarantine
            if expect.reason in reason and (expect.location is None or expect.location in location)
        ]
        if not found:
            failures.append(f"{expect.case}: no quarantine row like {expect.location!r}: {expect.reason!r}")
    assert not failures, "\n".join(failures) + "\n\nquarantine:\n" + "\n".join(f"{q[0]}: {q[1]}" for q in quarantine)
    # nothing stored that the corpus does not expect, and every refusal is storable text
    expected = [e.task for e in fmt.expects if e.outcome == "stored"]
    extra = [k for k in stored if not any(k == t or (t.endswith("#") and k.startswith(t)) for t in expected)]
    extra = [k for k in extra if not any(k == d["task"] for d in fmt.duplicates)]
    assert not extra, extra


def _check_duplicates(fmt: adversarial.Format, database_url: str) -> None:
    """The stored task, its frames and its raw document come from the first record; the other is a conflict."""
    with psycopg.connect(database_url) as conn:
        for duplicate in fmt.duplicates:
            row = conn.execute(
                "SELECT t.id, r.content FROM tasks t JOIN raw_documents r ON r.id = t.raw_document_id "
                "WHERE t.external_id = %s",
                (duplicate["task"],),
            ).fetchone()
            assert row is not None, duplicate
            energies = [e for (e,) in conn.execute("SELECT energy FROM frames WHERE task_id = %s", (row[0],))]
            raw = gzip.decompress(row[1]).decode("utf-8", errors="replace")
            assert duplicate["stored_marker"] in raw and duplicate["other_marker"] not in raw
            assert float(duplicate["stored_marker"]) in energies
            assert float(duplicate["other_marker"]) not in energies


@pytest.mark.parametrize("name", ["mptrj", "matpes", "mp-docs", "extxyz", "vasp"])
def test_adversarial_inputs_through_the_command(name: str, corpus, invoke, database_url: str) -> None:
    fmt = corpus.formats[name]
    for args in _commands(fmt):
        result = invoke(*args)
        assert result.exit_code == 3, (args, result.output, result.exception)  # finished, some input quarantined
    _check(fmt, database_url)
    _check_duplicates(fmt, database_url)
    again = [invoke(*args).exit_code for args in _commands(fmt)]  # idempotent, and still refused
    assert set(again) == {3}
    with psycopg.connect(database_url) as conn:
        n_tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert n_tasks == len({e.task for e in fmt.expects if e.outcome == "stored"} | {d["task"] for d in fmt.duplicates})


def test_adversarial_demo_corpus_through_the_loader(corpus, engine, database_url: str, limits: None) -> None:
    from crossfid.ingest.demo import read_demo_corpus
    from crossfid.ingest.loader import ingest

    fmt = corpus.formats["demo"]
    for path in fmt.inputs:
        summary = ingest(engine, "demo", "demo", read_demo_corpus(path))
        assert summary.quarantined > 0
    _check(fmt, database_url)
    _check_duplicates(fmt, database_url)


def test_broken_symlinks_alone_are_refused_and_fail_the_command(tmp_path: Path, invoke, database_url: str) -> None:
    calc = tmp_path / "calc"
    calc.mkdir()
    (calc / "vasprun.xml").symlink_to(tmp_path / "gone.xml")
    (calc / "vasprun.xml.relax1.gz").symlink_to(calc / "vasprun.xml.relax1.gz")  # a loop
    result = invoke("ingest", "vasp", str(tmp_path))
    assert result.exit_code == 3, result.output
    with psycopg.connect(database_url) as conn:
        reasons = sorted(r for (r,) in conn.execute("SELECT reason FROM quarantine"))
    assert reasons == [
        f"broken symlink: vasprun.xml -> {tmp_path / 'gone.xml'} (the target does not exist); nothing to read",
        f"broken symlink: vasprun.xml.relax1.gz -> {calc / 'vasprun.xml.relax1.gz'} (a symlink loop); nothing to read",
    ]

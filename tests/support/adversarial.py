"""The adversarial corpus: hostile and careless input in every source format, mixed with good records.

    python tests/support/adversarial.py OUTDIR [--bomb-mib 16] [--big-record-mib 2]

writes, under OUTDIR, one directory per source format (``mptrj/``, ``matpes/``,
``mp-docs/``, ``extxyz/``, ``vasp/``, ``demo/``) and prints what every case should
become. :func:`write_corpus` does the same from Python and returns the
:class:`Corpus` with those expectations; tests/ingest/test_adversarial_inputs.py ingests
each format through the real command line (the demo corpus through the real
loader) and checks every expectation.

Cases, in every format where they apply: NaN, ±inf and 1e200 in energies, forces,
stresses and magnetic moments; NUL characters and lone UTF-16 surrogates in ids
(as the JSON escapes ``\\u0000`` / ``\\ud800``, and as raw bytes: a raw NUL is not
valid in a JSON string, raw surrogate bytes are not valid UTF-8); 100,000-deep
nesting; a record larger than the per-record cap; a decompression bomb (whitespace
that expands to ``bomb_bytes``: refused when ``CROSSFID_MAX_DECOMPRESSED_BYTES`` is
below it, as the tests set it); billion laughs and XXE in vasprun.xml; the same id
twice with different content; two atoms 0.1 Å apart (accepted at ingestion: a
curation rule judges it); broken symlinks. Every bad record sits between good ones
in the same input, and every good record must be stored.

The caps the expectations assume are :data:`TEST_LIMITS` (set them in the
environment when ingesting the corpus).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `support` importable

from support.vasp_files import feo_run, vasprun_xml  # noqa: E402

DEEP = 100_000
#: the environment the expectations assume: a small decompressed-size cap and record cap (bomb and big record)
TEST_LIMITS = {"CROSSFID_MAX_DECOMPRESSED_BYTES": "4MiB", "CROSSFID_MAX_RECORD_BYTES": "1MiB"}
BOMB_BYTES = 16 * 2**20  # what the bombs expand to (above the 4 MiB cap of TEST_LIMITS)
BIG_RECORD_BYTES = 2 * 2**20  # a record above the 1 MiB record cap of TEST_LIMITS

NUL = "\u0000"
SURROGATE = "\ud800"
RAW_SURROGATE = b"\xed\xa0\x80"  # what UTF-8 would be for U+D800 if it were allowed: invalid UTF-8
A = 5.43  # Si lattice constant


@dataclass
class Expect:
    """What one case must become in the database."""

    case: str  # what the input holds
    outcome: str  # "stored", "refused" or "conflict"
    task: str | None = None  # external id of the task that must be stored (with `frames` frames)
    frames: int | None = None
    reason: str | None = None  # fragment of the quarantine reason (refused, conflict)
    location: str | None = None  # fragment of the quarantine location


@dataclass
class Format:
    """The inputs of one source format and their expectations."""

    name: str  # "mptrj", "matpes", "mp-docs", "extxyz", "vasp", "demo"
    inputs: list[Path]  # in the order they are given to the command
    expects: list[Expect] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)  # {"task", "stored_marker", "other_marker"}

    def add(self, *args: Any, **kwargs: Any) -> None:
        self.expects.append(Expect(*args, **kwargs))


@dataclass
class Corpus:
    root: Path
    formats: dict[str, Format]
    bomb_bytes: int
    big_record_bytes: int


# --------------------------------------------------------------------------- small builders


def _dumps(value: Any) -> bytes:
    """JSON as Python writes it (bare NaN/Infinity), keeping lone surrogates as \\ud800 escapes."""
    return json.dumps(value).encode("ascii")


def _deep(depth: int = DEEP) -> bytes:
    return b"[" * depth + b"]" * depth


def _gzip_bomb(path: Path, head: bytes, filler_bytes: int, tail: bytes, filler: bytes = b" ") -> Path:
    """gzip of head + ``filler_bytes`` of filler + tail, written without ever holding the filler."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = filler * (1 << 20)
    with open(path, "wb") as out:
        out.write(compressor.compress(head))
        left = filler_bytes
        while left > 0:
            piece = block[: min(left, len(block))]
            out.write(compressor.compress(piece))
            left -= len(piece)
        out.write(compressor.compress(tail))
        out.write(compressor.flush())
    return path


def si_structure(*, overlap: bool = False) -> dict[str, Any]:
    """A pymatgen ``Structure.as_dict()`` of Si2 (the second atom 0.1 Å from the first when ``overlap``)."""
    from pymatgen.core import Lattice, Structure

    second = [0.1 / A, 0.0, 0.0] if overlap else [0.25, 0.25, 0.25]
    return Structure(Lattice.cubic(A), ["Si", "Si"], [[0.0, 0.0, 0.0], second]).as_dict()


def _forces(scale: float = 0.1) -> list[list[float]]:
    return [[scale, -0.02, 0.01], [-scale, 0.02, -0.01]]


# --------------------------------------------------------------------------- MPtrj


def mptrj_frame(energy: float, *, forces=None, stress=None, magmom=None, overlap=False, e_relaxed=-5.6) -> dict:
    return {
        "structure": si_structure(overlap=overlap),
        "uncorrected_total_energy": energy,
        "corrected_total_energy": energy,
        "energy_per_atom": energy / 2,
        "ef_per_atom": -0.1,
        "e_per_atom_relaxed": e_relaxed,
        "ef_per_atom_relaxed": -0.2,
        "force": forces if forces is not None else _forces(),
        "stress": stress if stress is not None else [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "magmom": magmom if magmom is not None else [0.0, 0.0],
        "bandgap": 0.5,
        "mp_id": None,
    }


def _frames(mp_id: str, *frames: dict) -> dict:
    return {f"{mp_id}-0-{i}": frame for i, frame in enumerate(frames)}


def _member(key: str | bytes, value: bytes) -> bytes:
    key_bytes = key if isinstance(key, bytes) else _dumps(key)
    return key_bytes + b": " + value


def write_mptrj(directory: Path, bomb_bytes: int, big_record_bytes: int) -> Format:
    directory.mkdir(parents=True, exist_ok=True)
    fmt = Format("mptrj", [])
    members: list[bytes] = []
    name = "mixed.json"

    def good(mp_id: str, n: int = 2, energy: float = -10.8) -> None:
        members.append(_member(mp_id, _dumps(_frames(mp_id, *[mptrj_frame(energy - 0.01 * i) for i in range(n)]))))
        fmt.add(f"good material {mp_id}", "stored", task=f"mptrj:{mp_id}", frames=n)

    good("mp-1")
    members.append(_member("mp-2", _dumps(_frames("mp-2", mptrj_frame(float("nan")), mptrj_frame(-10.8)))))
    fmt.add("NaN energy", "refused", reason="energy is not finite (nan)", location=f"{name}#mp-2 task mptrj:mp-2")
    fmt.add("frame next to the NaN one", "stored", task="mptrj:mp-2", frames=1)
    inf_forces = _forces()
    inf_forces[1][2] = float("inf")
    members.append(_member("mp-3", _dumps(_frames("mp-3", mptrj_frame(-10.8, forces=inf_forces), mptrj_frame(-10.8)))))
    fmt.add("inf force", "refused", reason="forces contains non-finite values", location="mp-3 task mptrj:mp-3")
    fmt.add("frame next to the inf one", "stored", task="mptrj:mp-3", frames=1)
    huge = [
        mptrj_frame(-10.8, forces=[[1e200, 0.0, 0.0], [-1e200, 0.0, 0.0]]),
        mptrj_frame(1e200),
        mptrj_frame(-10.8, stress=[[1e200, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
        mptrj_frame(-10.8, magmom=[1e200, 0.0]),
        mptrj_frame(-10.81),
        mptrj_frame(-10.82),
    ]
    members.append(_member("mp-4", _dumps(_frames("mp-4", *huge))))
    where = "mp-4 task mptrj:mp-4 ionic step"
    fmt.add("1e200 force", "refused", reason="forces has a component of magnitude 1e+200", location=f"{where} 0")
    fmt.add("1e200 energy", "refused", reason="energy per atom is 5e+199 eV/atom, beyond", location=f"{where} 1")
    fmt.add("1e200 stress", "refused", reason="stress has a component of magnitude 1e+199 GPa", location=f"{where} 2")
    fmt.add("1e200 magmom", "refused", reason="magnetic moments has a component of magnitude", location=f"{where} 3")
    fmt.add("good frames of the task with 1e200 frames", "stored", task="mptrj:mp-4", frames=2)
    members.append(_member(f"mp-5{NUL}x", _dumps(_frames("mp-5", mptrj_frame(-10.8)))))
    fmt.add(
        "NUL in a material id", "refused", reason='material id "mp-5\\u0000x" contains a NUL', location="mp-5\\u0000x"
    )
    frames6 = {f"mp-6{NUL}-0-0": mptrj_frame(-10.7), "mp-6-0-0": mptrj_frame(-10.8)}
    members.append(_member("mp-6", _dumps(frames6)))
    fmt.add("NUL in a task id", "refused", reason='task id "mptrj:mp-6\\u0000" contains a NUL', location="mp-6 task")
    fmt.add("the other task of that material", "stored", task="mptrj:mp-6", frames=1)
    members.append(_member(f"mp-7{SURROGATE}", _dumps(_frames("mp-7", mptrj_frame(-10.8)))))
    fmt.add("lone surrogate in a material id", "refused", reason='"mp-7\\ud800" contains a lone surrogate (U+D800)')
    members.append(_member("mp-8", _deep()))
    fmt.add("100,000-deep nesting", "refused", reason="nesting is deeper than the limit of 64", location=f"{name}#mp-8")
    good("mp-9")
    frames10 = _dumps(_frames("mp-10", mptrj_frame(-10.8)))
    members.append(_member(b'"mp-10' + RAW_SURROGATE + b'"', frames10))
    fmt.add("raw surrogate bytes (invalid UTF-8)", "refused", reason="not UTF-8 text", location=f"{name}#mp-10\\ud800")
    members.append(_member("mp-11", _dumps(_frames("mp-11", mptrj_frame(-10.8, overlap=True)))))
    fmt.add("two atoms 0.1 Å apart", "stored", task="mptrj:mp-11", frames=1)
    members.append(_member("mp-12", _dumps(_frames("mp-12", mptrj_frame(-10.1201)))))
    good("mp-13")
    raw_nul = _dumps(_frames("mp-14", mptrj_frame(-10.8))).replace(b'"mp_id": null', b'"mp_id": "a\x00b"', 1)
    members.append(_member("mp-14", raw_nul))
    fmt.add("raw NUL byte in a string", "refused", reason="Invalid control character", location=f"{name}#mp-14")
    padding = mptrj_frame(-10.8)
    padding["note"] = "x" * big_record_bytes
    members.append(_member("mp-15", _dumps(_frames("mp-15", padding))))
    fmt.add("record above the record cap", "refused", reason="larger than the limit of 1 MiB", location="#mp-15")
    members.append(_member("mp-12", _dumps(_frames("mp-12", mptrj_frame(-10.9902), mptrj_frame(-10.9)))))
    fmt.add("duplicate material, other content", "conflict", reason="conflicts with stored task 'mptrj:mp-12'")
    fmt.duplicates.append({"task": "mptrj:mp-12", "stored_marker": "-10.1201", "other_marker": "-10.9902"})
    good("mp-16")
    mixed = directory / name
    mixed.write_bytes(b"{" + b",\n".join(members) + b"}")

    head = b"{" + _member("mp-20", _dumps(_frames("mp-20", mptrj_frame(-10.8)))) + b","
    tail = _member("mp-21", _dumps(_frames("mp-21", mptrj_frame(-10.8)))) + b"}"
    bomb = _gzip_bomb(directory / "bomb.json.gz", head, bomb_bytes, tail)
    fmt.add("good material before a gzip bomb", "stored", task="mptrj:mp-20", frames=1)
    fmt.add("gzip bomb", "refused", reason="decompressed size exceeds the cap of 4 MiB", location="bomb.json.gz#after")
    fmt.inputs = [mixed, bomb]
    return fmt


# --------------------------------------------------------------------------- MatPES


def matpes_doc(doc_id: str, energy: float = -10.8, *, forces=None, overlap=False, mp_id="mp-149", **extra) -> dict:
    return {
        "matpes_id": doc_id,
        "structure": si_structure(overlap=overlap),
        "energy": energy,
        "forces": forces if forces is not None else _forces(),
        "stress": [1.0, 2.0, 3.0, 0.1, 0.2, 0.3],
        "functional": "PBE",
        "provenance": {"original_mp_id": mp_id},
        **extra,
    }


def write_matpes(directory: Path, bomb_bytes: int, big_record_bytes: int) -> Format:
    directory.mkdir(parents=True, exist_ok=True)
    fmt = Format("matpes", [])
    lines: list[bytes] = []
    name = "mixed.jsonl"

    def good(doc_id: str, **kw: Any) -> None:
        lines.append(_dumps(matpes_doc(doc_id, **kw)))
        fmt.add(f"good document {doc_id}", "stored", task=f"matpes:{doc_id}", frames=1)

    good("matpes-1")
    lines.append(_dumps(matpes_doc("matpes-2", float("nan"))))
    fmt.add("NaN energy", "refused", reason="energy is not finite (nan)", location=f"{name}#matpes-2")
    lines.append(_dumps(matpes_doc("matpes-3", forces=[[float("inf"), 0.0, 0.0], [0.0, 0.0, 0.0]])))
    fmt.add("inf force", "refused", reason="forces contains non-finite values", location="#matpes-3")
    lines.append(_dumps(matpes_doc("matpes-4", forces=[[1e200, 0.0, 0.0], [0.0, 0.0, 0.0]])))
    fmt.add("1e200 force", "refused", reason="forces has a component of magnitude 1e+200 eV/Å, beyond the limit")
    lines.append(_dumps(matpes_doc(f"matpes-5{NUL}")))
    fmt.add("NUL in an id", "refused", reason='task id "matpes:matpes-5\\u0000" contains a NUL')
    lines.append(_dumps(matpes_doc("matpes-6", mp_id=f"mp-6{SURROGATE}")))
    fmt.add("lone surrogate in a material id", "refused", reason='material id "mp-6\\ud800" contains a lone surrogate')
    lines.append(b'{"matpes_id": "matpes-7' + RAW_SURROGATE + b'", "energy": -1.0}')
    fmt.add("raw surrogate bytes", "refused", reason="line 7 is not UTF-8 text", location=f"{name}:line 7")
    lines.append(b'{"matpes_id": "matpes-8", "x": ' + _deep() + b"}")
    fmt.add("100,000-deep nesting", "refused", reason="nesting is deeper than the limit of 64", location=":line 8")
    good("matpes-9")
    lines.append(_dumps(matpes_doc("matpes-10", -10.1201)))
    good("matpes-11", overlap=True)
    lines.append(_dumps(matpes_doc("matpes-12", note="x" * big_record_bytes)))
    fmt.add("line above the record cap", "refused", reason="line 12 is larger than the limit of 1 MiB")
    lines.append(_dumps(matpes_doc("matpes-13")).replace(b'"PBE"', b'"PB\x00E"'))
    fmt.add("raw NUL byte in a string", "refused", reason="malformed JSON on line 13: Invalid control character")
    lines.append(_dumps(matpes_doc("matpes-10", -10.9902)))
    fmt.add("duplicate id, other content", "conflict", reason="conflicts with stored task 'matpes:matpes-10'")
    fmt.duplicates.append({"task": "matpes:matpes-10", "stored_marker": "-10.1201", "other_marker": "-10.9902"})
    good("matpes-15")
    mixed = directory / name
    mixed.write_bytes(b"\n".join(lines) + b"\n")

    items = [_dumps(matpes_doc("matpes-20")), _deep(), _dumps(matpes_doc("matpes-21"))]
    items.append(_dumps(matpes_doc("matpes-22", float("inf"))))
    items.append(_dumps(matpes_doc("matpes-23")))
    array = directory / "array.json"
    array.write_bytes(b"[" + b",\n".join(items) + b"]")
    for doc_id in ("matpes-20", "matpes-21", "matpes-23"):
        fmt.add(f"good document {doc_id} of an array", "stored", task=f"matpes:{doc_id}", frames=1)
    fmt.add("deep item of an array", "refused", reason="nesting is deeper than the limit", location="array.json#item 1")
    fmt.add("inf energy in an array", "refused", reason="energy is not finite (inf)", location="#matpes-22")

    pretty = directory / "pretty.json"
    pretty.write_text(json.dumps(matpes_doc("matpes-30"), indent=2))
    fmt.add("one pretty-printed document", "stored", task="matpes:matpes-30", frames=1)

    head = _dumps(matpes_doc("matpes-40")) + b"\n"
    bomb = _gzip_bomb(directory / "bomb.jsonl.gz", head, bomb_bytes, b"\n" + _dumps(matpes_doc("matpes-41")) + b"\n")
    fmt.add("good line before a gzip bomb", "stored", task="matpes:matpes-40", frames=1)
    fmt.add("gzip bomb", "refused", reason="decompressed size exceeds the cap of 4 MiB", location="bomb.jsonl.gz")
    fmt.inputs = [mixed, array, pretty, bomb]
    return fmt


# --------------------------------------------------------------------------- MP task documents


def task_doc(task_id: str, energies=(-10.8, -10.85, -10.9), *, material_id="mp-149", forces=None, stress=None, **kw):
    overlap = kw.pop("overlap", False)
    steps = []
    for k, energy in enumerate(energies):
        steps.append(
            {
                "structure": si_structure(overlap=overlap),
                "e_fr_energy": energy,
                "forces": (forces or {}).get(k, _forces(0.1 / (k + 1))),
                "stress": (stress or {}).get(k, [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                "electronic_steps": [{}] * 10,
            }
        )
    calc = {
        "task_name": "relax1",
        "input": {"incar": {"ENCUT": 520, "IBRION": 2, "NSW": 99, "ISPIN": 1}, "potcar": ["Si"]},
        "output": {"ionic_steps": steps},
    }
    calc["input"]["potcar_type"] = ["PAW_PBE"]
    return {"task_id": task_id, "material_id": material_id, "calcs_reversed": [calc], **kw}


def write_mp_docs(directory: Path, bomb_bytes: int, big_record_bytes: int) -> Format:
    directory.mkdir(parents=True, exist_ok=True)
    fmt = Format("mp-docs", [])
    docs: list[bytes] = []
    name = "tasks.json"

    def good(task_id: str, **kw: Any) -> None:
        docs.append(_dumps(task_doc(task_id, **kw)))
        fmt.add(f"good task {task_id}", "stored", task=task_id, frames=3)

    good("mp-1001")
    docs.append(_dumps(task_doc("mp-1002", (-10.8, float("nan"), -10.9))))
    fmt.add(
        "NaN energy of one step", "refused", reason="energy is not finite (nan)", location="task mp-1002 ionic step 1"
    )
    fmt.add("the other steps of that task", "stored", task="mp-1002", frames=2)
    docs.append(_dumps(task_doc("mp-1003", forces={0: [[1e200, 0.0, 0.0], [0.0, 0.0, 0.0]]})))
    fmt.add("1e200 force of one step", "refused", reason="forces has a component of magnitude 1e+200")
    fmt.add("the other steps of the 1e200 task", "stored", task="mp-1003", frames=2)
    docs.append(_dumps(task_doc(f"mp-1004{NUL}")))
    fmt.add("NUL in a task id", "refused", reason='task id "mp-1004\\u0000" contains a NUL')
    docs.append(_dumps(task_doc("mp-1005", material_id=f"mp-{SURROGATE}5")))
    fmt.add("lone surrogate in a material id", "refused", reason='material id "mp-\\ud8005" contains a lone surrogate')
    deep = task_doc("mp-1006")
    docs.append(_dumps(deep)[:-1] + b', "extra": ' + _deep() + b"}")
    fmt.add(
        "100,000-deep nesting", "refused", reason="nesting is deeper than the limit of 64", location=f"{name}#item 5"
    )
    good("mp-1007")
    docs.append(_dumps(task_doc("mp-1008", (-10.1201, -10.2, -10.3))))
    good("mp-1009", overlap=True)
    stress = {1: [[float("inf"), 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]}
    docs.append(_dumps(task_doc("mp-1010", stress=stress)))
    fmt.add(
        "inf stress of one step", "refused", reason="stress contains non-finite values", location="mp-1010 ionic step 1"
    )
    fmt.add("the other steps of the inf task", "stored", task="mp-1010", frames=2)
    docs.append(_dumps(task_doc("mp-1011", note="x" * big_record_bytes)))
    fmt.add("document above the record cap", "refused", reason="larger than the limit of 1 MiB", location="#item 10")
    docs.append(b'{"task_id": "mp-1012' + RAW_SURROGATE + b'"}')
    fmt.add("raw surrogate bytes", "refused", reason="not UTF-8 text", location=f"{name}#item 11")
    docs.append(_dumps(task_doc("mp-1008", (-10.9902, -10.2, -10.3))))
    fmt.add("duplicate task id, other content", "conflict", reason="conflicts with stored task 'mp-1008'")
    fmt.duplicates.append({"task": "mp-1008", "stored_marker": "-10.1201", "other_marker": "-10.9902"})
    good("mp-1013")
    tasks = directory / name
    tasks.write_bytes(b"[" + b",\n".join(docs) + b"]")

    pretty = directory / "pretty.json"
    pretty.write_text(json.dumps(task_doc("mp-1020"), indent=2))
    fmt.add("one pretty-printed task document", "stored", task="mp-1020", frames=3)

    head = b"[" + _dumps(task_doc("mp-1030")) + b","
    bomb = _gzip_bomb(directory / "bomb.json.gz", head, bomb_bytes, _dumps(task_doc("mp-1031")) + b"]")
    fmt.add("good document before a gzip bomb", "stored", task="mp-1030", frames=3)
    fmt.add("gzip bomb", "refused", reason="decompressed size exceeds the cap of 4 MiB", location="bomb.json.gz")
    fmt.inputs = [tasks, pretty, bomb]
    return fmt


# --------------------------------------------------------------------------- extxyz


def _xyz_number(value: float) -> str:
    return (
        repr(float(value)) if np.isfinite(value) else ("nan" if np.isnan(value) else ("inf" if value > 0 else "-inf"))
    )


def xyz_frame(
    material: str | bytes,
    task: str,
    energy: float = -10.8,
    *,
    forces=None,
    overlap: bool = False,
    stress=None,
    extra: bytes = b"",
) -> bytes:
    second = [0.1, 0.0, 0.0] if overlap else [A / 4, A / 4, A / 4]
    forces = forces if forces is not None else _forces()
    stress = stress if stress is not None else [0.001, 0.0, 0.0, 0.0, 0.001, 0.0, 0.0, 0.0, 0.001]
    material_bytes = material if isinstance(material, bytes) else material.encode()
    comment = (
        f'Lattice="{A} 0.0 0.0 0.0 {A} 0.0 0.0 0.0 {A}" Properties=species:S:1:pos:R:3:forces:R:3 '
        f'energy={_xyz_number(energy)} stress="{" ".join(_xyz_number(s) for s in stress)}" '
        f'task_id={task} pbc="T T T" material_id='
    ).encode()
    comment += material_bytes + extra
    rows = []
    for symbol, position, force in zip(("Si", "Si"), ([0.0, 0.0, 0.0], second), forces, strict=True):
        values = " ".join(_xyz_number(v) for v in (*position, *force))
        rows.append(f"{symbol} {values}".encode())
    return b"2\n" + comment + b"\n" + b"\n".join(rows) + b"\n"


def write_extxyz(directory: Path, bomb_bytes: int, big_record_bytes: int) -> Format:
    directory.mkdir(parents=True, exist_ok=True)
    fmt = Format("extxyz", [])
    frames: list[bytes] = []
    name = "mixed.extxyz"

    def good(material: str, **kw: Any) -> None:
        frames.append(xyz_frame(material, f"t-{material}", **kw))
        fmt.add(f"good frame {material}", "stored", task=f"t-{material}", frames=1)

    good("ext-1")
    frames.append(xyz_frame("ext-2", "t-ext-2", float("nan")))
    fmt.add("NaN energy", "refused", reason="energy is not finite (nan)", location="task t-ext-2")
    frames.append(xyz_frame("ext-3", "t-ext-3", forces=[[float("inf"), 0.0, 0.0], [0.0, 0.0, 0.0]]))
    fmt.add("inf force", "refused", reason="forces contains non-finite values", location="task t-ext-3")
    frames.append(xyz_frame("ext-4", "t-ext-4", forces=[[1e200, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    fmt.add("1e200 force", "refused", reason="forces has a component of magnitude 1e+200", location="task t-ext-4")
    frames.append(xyz_frame(b"ext-5\x00x", "t-ext-5"))
    fmt.add("raw NUL byte in a material id", "refused", reason="info['material_id'] \"ext-5\\u0000x\" contains a NUL")
    frames.append(xyz_frame(b"ext-6" + RAW_SURROGATE, "t-ext-6"))
    fmt.add("raw surrogate bytes", "refused", reason="UnicodeDecodeError", location=f"{name}:frame 5")
    frames.append(xyz_frame("ext-7", "t-ext-7", extra=b" nested=" + _deep()))
    fmt.add("100,000-deep brackets in the comment line (plain text to extxyz)", "stored", task="t-ext-7", frames=1)
    good("ext-8", overlap=True)
    frames.append(xyz_frame("ext-9", "t-ext-9", stress=[1e200, 0, 0, 0, 1, 0, 0, 0, 1]))
    fmt.add("1e200 stress", "refused", reason="stress has a component of magnitude", location="task t-ext-9")
    frames.append(xyz_frame("ext-10", "t-ext-10", -10.8))
    frames.append(xyz_frame("ext-10", "t-ext-10", 1e200))
    frames.append(xyz_frame("ext-10", "t-ext-10", -10.9))
    fmt.add("1e200 energy in a trajectory", "refused", reason="energy per atom is 5e+199", location="task t-ext-10")
    fmt.add("the other frames of that trajectory", "stored", task="t-ext-10", frames=2)
    frames.append(xyz_frame("ext-11", "t-ext-11", extra=b' note="' + b"x" * big_record_bytes + b'"'))
    fmt.add("frame above the record cap", "refused", reason="frame 12 is larger than the limit of 1 MiB")
    good("ext-12")
    mixed = directory / name
    mixed.write_bytes(b"".join(frames))

    dup_a, dup_b = directory / "dup_a.extxyz", directory / "dup_b.extxyz"
    dup_a.write_bytes(xyz_frame("ext-20", "t-ext-20", -10.1201))
    dup_b.write_bytes(xyz_frame("ext-20", "t-ext-20", -10.9902))
    fmt.add("same task id in two files, other content", "conflict", reason="conflicts with stored task 't-ext-20'")
    fmt.duplicates.append({"task": "t-ext-20", "stored_marker": "-10.1201", "other_marker": "-10.9902"})

    bomb = _gzip_bomb(
        directory / "bomb.extxyz.gz", xyz_frame("ext-30", "t-ext-30"), bomb_bytes, xyz_frame("ext-31", "t-ext-31")
    )
    fmt.add("good frame before a gzip bomb", "stored", task="t-ext-30", frames=1)
    fmt.add("gzip bomb", "refused", reason="decompressed size exceeds the cap of 4 MiB", location="bomb.extxyz.gz")
    fmt.inputs = [mixed, dup_a, dup_b, bomb]
    return fmt


# --------------------------------------------------------------------------- VASP directories

_LAUGHS = (
    '<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE modeling [\n <!ENTITY lol "lol">\n'
    + "".join(f' <!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">\n' for i in range(1, 10))
    + "]>\n"
)
_XXE = '<?xml version="1.0" encoding="ISO-8859-1"?>\n<!DOCTYPE modeling [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'


def _vasprun_text(run) -> bytes:
    return vasprun_xml(run).encode("latin-1")


def write_vasp(directory: Path, bomb_bytes: int, big_record_bytes: int) -> Format:
    directory.mkdir(parents=True, exist_ok=True)
    fmt = Format("vasp", [directory])

    def write(name: str, content: bytes, file: str = "vasprun.xml") -> Path:
        (directory / name).mkdir(parents=True, exist_ok=True)
        path = directory / name / file
        path.write_bytes(content)
        return path

    write("good", _vasprun_text(feo_run(n_steps=3, seed=1)))
    fmt.add("good calculation", "stored", task="vasp:good#", frames=3)
    run = feo_run(n_steps=3, seed=2)
    run.steps[1].e_fr_energy = float("nan")
    write("nan", _vasprun_text(run))
    fmt.add("NaN energy of one step", "refused", reason="energy is not finite (nan)", location="ionic step 1")
    fmt.add("the other steps of the NaN run", "stored", task="vasp:nan#", frames=2)
    run = feo_run(n_steps=4, seed=3)
    run.steps[1].forces = [[1e200, 0.0, 0.0], [-1e200, 0.0, 0.0]]
    run.steps[2].e_fr_energy = 1e200
    write("huge", _vasprun_text(run))
    fmt.add("1e200 force", "refused", reason="forces has a component of magnitude 1e+200")
    fmt.add("1e200 energy", "refused", reason="energy per atom is 5e+199 eV/atom")
    fmt.add("the other steps of the 1e200 run", "stored", task="vasp:huge#", frames=2)
    run = feo_run(n_steps=3, seed=4)
    run.steps[0].stress_kbar = [[float("inf"), 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    write("inf", _vasprun_text(run))
    fmt.add("inf stress", "refused", reason="stress contains non-finite values", location="ionic step 0")
    fmt.add("the other steps of the inf run", "stored", task="vasp:inf#", frames=2)
    text = _vasprun_text(feo_run(n_steps=2, seed=5))
    prec = b'<i type="string" name="PREC">Accurate</i>'
    write("nul", text.replace(prec, b'<i type="string" name="PREC">Accu\x00rate</i>'))
    fmt.add("raw NUL byte in the XML", "refused", reason="unparseable vasprun.xml", location="nul/vasprun.xml")
    write("surrogate", text.replace(prec, b'<i type="string" name="PREC">Accu&#xD800;rate</i>'))
    fmt.add("lone surrogate character reference", "refused", reason="unparseable", location="surrogate/vasprun.xml")
    start = text.index(b"<calculation>")
    write("deep", text[:start] + b"<a>" * DEEP + b"</a>" * DEEP + text[start:])
    fmt.add("100,000-deep XML nesting", "refused", reason="unparseable vasprun.xml", location="deep/vasprun.xml")
    body = text[text.index(b"<modeling>") :]
    write("laughs", _LAUGHS.encode() + body.replace(b"vasp </i>", b"&lol9;</i>", 1))
    fmt.add("billion laughs", "refused", reason="holds a <!DOCTYPE declaration", location="laughs/vasprun.xml")
    write("xxe", _XXE.encode() + body.replace(b"vasp </i>", b"&xxe;</i>", 1))
    fmt.add("XXE", "refused", reason="holds a <!DOCTYPE declaration: refused unparsed", location="xxe/vasprun.xml")
    (directory / "bomb").mkdir(exist_ok=True)
    end = text.rindex(b"</modeling>")
    _gzip_bomb(directory / "bomb" / "vasprun.xml.gz", text[:end], bomb_bytes, text[end:])
    fmt.add("gzip bomb", "refused", reason="decompressed size exceeds the cap of 4 MiB", location="bomb/vasprun.xml.gz")
    write("outcar-bomb", _vasprun_text(feo_run(n_steps=2, seed=7)))
    _gzip_bomb(directory / "outcar-bomb" / "OUTCAR.gz", b" vasp.6.3.2\n", bomb_bytes, b"\n")
    fmt.add("OUTCAR.gz bomb beside a good vasprun", "refused", reason="cap of 4 MiB", location="outcar-bomb/OUTCAR.gz")
    fmt.add("the run whose OUTCAR is a bomb (without moments)", "stored", task="vasp:outcar-bomb#", frames=2)
    (directory / "broken").mkdir(exist_ok=True)
    link = directory / "broken" / "vasprun.xml"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(directory / "broken" / "no-such-vasprun.xml", link)
    fmt.add("broken symlink", "refused", reason="broken symlink: vasprun.xml ->", location="broken/vasprun.xml")
    run = feo_run(n_steps=2, seed=6)
    close = [[0.0, 0.0, 0.0], [0.1 / float(np.linalg.norm(run.lattice[0])), 0.0, 0.0]]  # 0.1 Å along a
    run.frac_coords = close
    for step in run.steps:
        step.frac_coords = close
        step.lattice = None  # the initial cell, so the atoms stay 0.1 Å apart
    write("overlap", _vasprun_text(run))
    fmt.add("two atoms 0.1 Å apart", "stored", task="vasp:overlap#", frames=2)
    return fmt


# --------------------------------------------------------------------------- demo corpus


def demo_group(material: str, task: str, energies=(-10.8, -10.85), *, forces=None, overlap=False) -> dict:
    second = [0.1 / A, 0.0, 0.0] if overlap else [0.25, 0.25, 0.25]
    frames = []
    for k, energy in enumerate(energies):
        frames.append(
            {
                "ionic_step": k,
                "lattice": [[A, 0.0, 0.0], [0.0, A, 0.0], [0.0, 0.0, A]],
                "frac_coords": [[0.0, 0.0, 0.0], second],
                "energy": energy,
                "forces": (forces or {}).get(k, _forces()),
                "stress": [[0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1]],
                "magmoms": None,
                "n_electronic_steps": 12,
                "scf_converged": True,
            }
        )
    task_doc = {
        "task_id": task,
        "fidelity": "GGA",
        "run_type": "PBE (CHGNet surrogate)",
        "task_type": "relax",
        "atomic_numbers": [14, 14],
        "frames": frames,
        "code": "CHGNet-surrogate",
    }
    return {
        "format": "crossfid-demo",
        "format_version": 1,
        "kind": "task_group",
        "material_id": material,
        "fidelity": "GGA",
        "tasks": [task_doc],
    }


def write_demo(directory: Path, bomb_bytes: int, big_record_bytes: int) -> Format:
    directory.mkdir(parents=True, exist_ok=True)
    fmt = Format("demo", [])
    name = "corpus.jsonl.gz"
    lines = [_dumps({"kind": "header", "format": "crossfid-demo", "format_version": 1})]

    def good(material: str, **kw: Any) -> None:
        lines.append(_dumps(demo_group(material, f"{material}-t", **kw)))
        fmt.add(f"good task group {material}", "stored", task=f"{material}-t", frames=2)

    good("demo-1")
    lines.append(_dumps(demo_group("demo-2", "demo-2-t", (float("nan"), -10.8))))
    fmt.add("NaN energy", "refused", reason="energy is not finite (nan)", location="task demo-2-t ionic step 0")
    fmt.add("the other frame of the NaN task", "stored", task="demo-2-t", frames=1)
    lines.append(_dumps(demo_group("demo-3", "demo-3-t", forces={1: [[1e200, 0.0, 0.0], [0.0, 0.0, 0.0]]})))
    fmt.add(
        "1e200 force", "refused", reason="forces has a component of magnitude 1e+200", location="demo-3-t ionic step 1"
    )
    fmt.add("the other frame of the 1e200 task", "stored", task="demo-3-t", frames=1)
    lines.append(_dumps(demo_group(f"demo-4{NUL}", "demo-4-t")))
    fmt.add("NUL in a material id", "refused", reason='material id "demo-4\\u0000" contains a NUL')
    lines.append(_dumps(demo_group("demo-5", f"demo-5-t{SURROGATE}")))
    fmt.add("lone surrogate in a task id", "refused", reason='task id "demo-5-t\\ud800" contains a lone surrogate')
    lines.append(b'{"kind": "task_group", "x": ' + _deep() + b"}")
    fmt.add(
        "100,000-deep nesting", "refused", reason="nesting is deeper than the limit of 64", location=f"{name}:line 7"
    )
    lines.append(b'{"kind": "task_group", "material_id": "demo-7' + RAW_SURROGATE + b'"}')
    fmt.add("raw surrogate bytes", "refused", reason="not UTF-8", location=f"{name}:line 8")
    lines.append(_dumps(demo_group("demo-8", "demo-8-t", (-10.1201, -10.2))))
    good("demo-9", overlap=True)
    lines.append(_dumps(demo_group("demo-8", "demo-8-t", (-10.9902, -10.2))))
    fmt.add("duplicate task id, other content", "conflict", reason="conflicts with stored task 'demo-8-t'")
    fmt.duplicates.append({"task": "demo-8-t", "stored_marker": "-10.1201", "other_marker": "-10.9902"})
    good("demo-10")
    corpus = directory / name
    corpus.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", mtime=0))

    head = lines[0] + b"\n" + _dumps(demo_group("demo-20", "demo-20-t")) + b"\n"
    bomb = _gzip_bomb(directory / "bomb.jsonl.gz", head, bomb_bytes, _dumps(demo_group("demo-21", "demo-21-t")))
    fmt.add("good line before a gzip bomb", "stored", task="demo-20-t", frames=2)
    fmt.add("gzip bomb", "refused", reason="decompressed size exceeds the cap of 4 MiB", location="bomb.jsonl.gz")
    fmt.inputs = [corpus, bomb]
    return fmt


# --------------------------------------------------------------------------- the corpus

WRITERS = {
    "mptrj": write_mptrj,
    "matpes": write_matpes,
    "mp-docs": write_mp_docs,
    "extxyz": write_extxyz,
    "vasp": write_vasp,
    "demo": write_demo,
}


def write_corpus(
    outdir: Path,
    formats: tuple[str, ...] = tuple(WRITERS),
    *,
    bomb_bytes: int = BOMB_BYTES,
    big_record_bytes: int = BIG_RECORD_BYTES,
) -> Corpus:
    """Write the corpus for ``formats`` under ``outdir`` (one directory each) and return its expectations."""
    outdir = Path(outdir)
    written = {name: WRITERS[name](outdir / name, bomb_bytes, big_record_bytes) for name in formats}
    return Corpus(outdir, written, bomb_bytes, big_record_bytes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--bomb-mib", type=float, default=BOMB_BYTES / 2**20, help="what each bomb expands to")
    parser.add_argument("--big-record-mib", type=float, default=BIG_RECORD_BYTES / 2**20)
    args = parser.parse_args(argv)
    corpus = write_corpus(
        args.outdir, bomb_bytes=int(args.bomb_mib * 2**20), big_record_bytes=int(args.big_record_mib * 2**20)
    )
    print(
        f"adversarial corpus in {corpus.root}; expectations assume "
        + " ".join(f"{k}={v}" for k, v in TEST_LIMITS.items())
    )
    for fmt in corpus.formats.values():
        print(f"\n{fmt.name}: {' '.join(str(p.relative_to(corpus.root)) for p in fmt.inputs)}")
        for e in fmt.expects:
            detail = f"task {e.task} with {e.frames} frame(s)" if e.outcome == "stored" else f"reason ~ {e.reason!r}"
            print(f"  {e.outcome:9} {e.case}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

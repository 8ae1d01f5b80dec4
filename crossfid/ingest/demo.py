"""The ``demo`` source: reads a corpus written by :mod:`crossfid.demo.generator`.

File format
    A gzip JSON-lines file. Line 1 is a header (``"kind": "header"``: format version,
    seed, settings, package versions, the labelling model of each fidelity). Every further
    line is one *task group*: one material at one fidelity group (GGA-or-GGA+U, or r2SCAN)
    with its tasks, frames, reference entry and the flaws injected into it (``"flaws"``).
    The labels come from a surrogate model, not from DFT; every task says so (``code``,
    ``run_type``, ``input_parameters["label_source"]`` and ``["label_model"]``).

Versions
    1: CHGNet labels (magmoms on every frame). 2 (written now): labels from the
    generator's ``labeller`` (SevenNet-MF-0 by default, whose frames have no magmoms),
    ``label_model`` / ``relax_model`` in input parameters and provenance. Both are read
    (the same fields); a new version keeps an older cached corpus from being reused.

Units (as :mod:`crossfid.ingest.records`): energies eV total (uncorrected), forces
eV/Å, stress GPa tensile-positive (ASE/CHGNet), magmoms μB (absent when the model predicts none).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.ingest.records import Bundle, Frame, Material, RawDocument, ReferenceEntry, Refusal, Task
from crossfid.ingest.sourceio import (
    Limits,
    compression_of,
    iter_lines,
    json_depth_problem,
    open_decompressed,
    record_size_reason,
    stream_problem,
)

FORMAT = "crossfid-demo"
FORMAT_VERSION = 2
#: versions this reader accepts
READABLE_VERSIONS = (1, 2)


def _array(value: Any, dtype=float) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=dtype)


def document_to_bundle(document: dict[str, Any], location: str) -> Bundle:
    """Canonical records of one task-group document (raises KeyError/TypeError/ValueError when malformed)."""
    if document.get("format") != FORMAT or document.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(
            f"not a {FORMAT} document of version {', '.join(map(str, READABLE_VERSIONS))} "
            f"(format {document.get('format')!r}, version {document.get('format_version')!r})"
        )
    if document.get("kind") != "task_group":
        raise ValueError(f"unexpected document kind {document.get('kind')!r}")
    material_id = str(document["material_id"])
    tasks: list[Task] = []
    atomic_numbers_seen = None
    for task in document["tasks"]:
        numbers = np.asarray(task["atomic_numbers"], dtype=np.int16)
        atomic_numbers_seen = numbers if atomic_numbers_seen is None else atomic_numbers_seen
        frames = [
            Frame(
                ionic_step=int(frame["ionic_step"]),
                lattice=np.asarray(frame["lattice"], dtype=float),
                atomic_numbers=numbers,
                frac_coords=np.asarray(frame["frac_coords"], dtype=float),
                energy=None if frame.get("energy") is None else float(frame["energy"]),
                forces=_array(frame.get("forces")),
                stress=_array(frame.get("stress")),
                magmoms=_array(frame.get("magmoms")),
                n_electronic_steps=frame.get("n_electronic_steps"),
                scf_converged=frame.get("scf_converged"),
            )
            for frame in task["frames"]
        ]
        hubbards = task.get("hubbards")
        tasks.append(
            Task(
                external_id=str(task["task_id"]),
                fidelity=str(task["fidelity"]),
                run_type=str(task["run_type"]),
                task_type=task["task_type"],
                frames=frames,
                input_parameters=dict(task.get("input_parameters") or {}),
                hubbards=None if hubbards is None else {str(k): float(v) for k, v in hubbards.items()},
                source_run_type=task.get("source_run_type"),
                code=str(task.get("code", "CHGNet-surrogate")),
                code_version=task.get("code_version"),
            )
        )
    if atomic_numbers_seen is None:
        raise ValueError("document has no tasks")
    references = []
    ref = document.get("reference")
    if ref:
        references.append(
            ReferenceEntry(
                fidelity=str(ref["fidelity"]),
                energy_per_atom=float(ref["energy_per_atom"]),
                n_atoms=int(ref["n_atoms"]),
                structure=ref.get("structure"),
                entry_id=ref.get("entry_id"),
                task_external_id=ref.get("task_id"),
            )
        )
    return Bundle(
        material=Material.from_atomic_numbers(material_id, atomic_numbers_seen.tolist()),
        location=location,
        tasks=tasks,
        references=references,
        raw=RawDocument.from_json(document, location),
    )


def _line_record(line_bytes: bytes, where: str, limits: Limits | None = None) -> Bundle | Refusal | None:
    """The record of one line (None for the header and blank lines)."""
    text = None
    try:
        text = line_bytes.decode("utf-8")
        if not text.strip():
            return None
        problem = json_depth_problem(line_bytes, limits or Limits.from_env())
        if problem is not None:
            return Refusal(location=where, reason=problem, raw_text=text[:2000])
        document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError(f"a JSON object was expected, got {type(document).__name__}")
        if document.get("kind") == "header":
            if document.get("format") != FORMAT or document.get("format_version") not in READABLE_VERSIONS:
                raise ValueError(f"unsupported header {document.get('format')!r} v{document.get('format_version')!r}")
            return None
        return document_to_bundle(document, f"{where}#{document.get('material_id')}/{document.get('fidelity')}")
    except UnicodeDecodeError as exc:
        return Refusal(location=where, reason=f"not UTF-8 text: {exc}")
    except json.JSONDecodeError as exc:
        return Refusal(location=where, reason=f"invalid JSON: {exc}", raw_text=text[:20000])
    except Exception as exc:  # noqa: BLE001 - a line that cannot be converted is refused alone, never fatal
        reason = f"malformed demo document: {type(exc).__name__}: {exc}"
        return Refusal(location=where, reason=reason, raw_text=None if text is None else text[:20000])


def read_demo_corpus(path: Path) -> Iterator[Bundle | Refusal]:
    """Canonical records of a corpus file: one Bundle per task-group line, a Refusal for each bad line.

    Bad input never raises: an unparsable or malformed line becomes
    ``Refusal(location="<file>:line N", reason=...)`` (also a line nested deeper or
    longer than the limits of :class:`~crossfid.ingest.sourceio.Limits`, which is
    never parsed nor held whole), and a damaged stream, or one expanding beyond
    ``CROSSFID_MAX_DECOMPRESSED_BYTES``, a Refusal for the rest of the file. (A missing
    file raises ``FileNotFoundError``.)
    """
    path = Path(path)
    name = path.name
    limits = Limits.from_env()
    number = 0
    with open(path, "rb") as handle:  # a missing file raises here, before anything is read
        kind = compression_of(handle.read(6)) or "text"
    try:
        with open_decompressed(path, limits) as stream:
            for number, line_bytes in iter_lines(stream, limits.max_record_bytes):  # noqa: B007 - used after the loop
                where = f"{name}:line {number}"
                if line_bytes is None:
                    yield Refusal(location=where, reason=record_size_reason(limits.max_record_bytes, f"line {number}"))
                    continue
                record = _line_record(line_bytes, where, limits)
                if record is not None:
                    yield record
    except Exception as exc:  # noqa: BLE001 - the rest of the file is lost; say why and where
        yield Refusal(
            location=f"{name}:line {number + 1}",
            reason=f"unreadable {kind} stream after line {number}: {stream_problem(exc)}",
        )

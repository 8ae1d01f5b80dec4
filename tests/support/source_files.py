"""Helpers shared by several test modules (moved from ingest/test_sourceio.py)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from pymatgen.core import Lattice, Structure

from crossfid.ingest.records import Bundle, Refusal, validate_bundle


def structure_dict(species: list[str], a: float = 5.43, frac: list[list[float]] | None = None) -> dict:
    frac = frac if frac is not None else [[0.0, 0.0, 0.0], [0.25, 0.25, 0.25], [0.5, 0.5, 0.0]][: len(species)]
    lattice = Lattice([[a, 0.0, 0.0], [0.1, a, 0.0], [0.0, 0.2, a]])
    return Structure(lattice, species, frac).as_dict()


def collect(records) -> tuple[list[Bundle], list[Refusal], list[Bundle]]:
    """(validated bundles, all refusals incl. validate_bundle's, bundles as yielded)."""
    good, refused, raw = [], [], []
    for record in records:
        if isinstance(record, Refusal):
            refused.append(record)
            continue
        raw.append(record)
        bundle, refusals = validate_bundle(record)
        refused.extend(refusals)
        if bundle is not None:
            good.append(bundle)
    return good, refused, raw


def refusal_at(refusals: list[Refusal], fragment: str) -> Refusal:
    hits = [r for r in refusals if fragment in r.location]
    assert len(hits) == 1, (fragment, [(r.location, r.reason) for r in refusals])
    return hits[0]


def mptrj_frame(species, energy, *, correction=-0.5, e_relaxed=None, stress=None, magmom="auto", a=5.43):
    n = len(species)
    forces = (np.arange(3 * n, dtype=float).reshape(n, 3) / 10 - 0.3).tolist()
    return {
        "structure": structure_dict(species, a=a),
        "uncorrected_total_energy": energy,
        "corrected_total_energy": energy + correction,
        "energy_per_atom": (energy + correction) / n,
        "ef_per_atom": -0.1,
        "e_per_atom_relaxed": e_relaxed,
        "ef_per_atom_relaxed": -0.25,
        "force": forces,
        "stress": stress if stress is not None else [[10.0, 1.0, 0.0], [1.0, -20.0, 0.0], [0.0, 0.0, 5.0]],
        "magmom": [0.5 * (i + 1) for i in range(n)] if magmom == "auto" else magmom,
        "bandgap": 0.5,
        "mp_id": None,
    }


def write_json(path: Path, document, *, gz: bool = False) -> Path:
    text = json.dumps(document)  # allow_nan: Python writes bare NaN tokens, as real files do
    if gz:
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def good_mptrj() -> dict:
    si = ["Si", "Si"]
    # written out of order on purpose: calc 1 is MP's first relaxation, calc 0 the second
    frames = {
        "mp-149-0-1": mptrj_frame(si, -10.8, e_relaxed=(-10.8 - 0.5) / 2),
        "mp-149-1-0": mptrj_frame(si, -10.0),
        "mp-149-0-0": mptrj_frame(si, -10.7),
        "mp-149-1-1": mptrj_frame(si, -10.5),
    }
    for frame in frames.values():
        frame["e_per_atom_relaxed"] = (-10.8 - 0.5) / 2
        frame["mp_id"] = "mp-149"
    nacl = {
        "weird-id": mptrj_frame(["Na", "Cl"], -6.0, correction=0.0, magmom=None, e_relaxed=-3.0),
        "other": mptrj_frame(["Na", "Cl"], -6.5, correction=0.0, magmom=None, e_relaxed=-3.0),
    }
    return {"mp-149": frames, "mp-22862": nacl}


def bad_mptrj_frames() -> dict[str, dict]:
    """frame id → bad frame (each in its own material, between good ones)."""
    nan_energy = mptrj_frame(["Si", "Si"], float("nan"))
    no_force = mptrj_frame(["Si", "Si"], -10.0)
    del no_force["force"]
    bad_shape = mptrj_frame(["Si", "Si"], -10.0)
    bad_shape["force"] = [[0.0, 0.0], [0.0, 0.0]]
    unknown = mptrj_frame(["Si", "Si"], -10.0)
    unknown["structure"]["sites"][1]["species"][0]["element"] = "Xx"
    flat = mptrj_frame(["Si", "Si"], -10.0)
    flat["structure"]["lattice"]["matrix"] = [[5.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]
    empty = mptrj_frame(["Si", "Si"], -10.0)
    empty["structure"]["sites"] = []
    inf_stress = mptrj_frame(["Si", "Si"], -10.0, stress=[[float("inf"), 0, 0], [0, 0, 0], [0, 0, 0]])
    return {
        "mp-901-0-0": nan_energy,
        "mp-902-0-0": no_force,
        "mp-903-0-0": bad_shape,
        "mp-904-0-0": unknown,
        "mp-905-0-0": flat,
        "mp-906-0-0": empty,
        "mp-907-0-0": inf_stress,
    }


def matpes_doc(i: int, species=("Ti", "Y"), functional="PBE", **changes) -> dict:
    n = len(species)
    doc = {
        "builder_meta": {"note": "ignored"},
        "nsites": n,
        "elements": sorted(set(species)),
        "structure": structure_dict(list(species), a=3.5),
        "energy": -13.19442081 - i,
        "forces": (np.arange(3 * n, dtype=float).reshape(n, 3) * 0.01 + i).tolist(),
        # Voigt xx, yy, zz, yz, xz, xy in kBar, VASP sign
        "stress": [10.0, -5.0, 13.6, 2.0, 3.0, 4.0],
        "magmoms": [0.1 * (k + 1) for k in range(n)],
        "matpes_id": f"matpes-20240214_999484_{i}",
        "bandgap": 0.0,
        "functional": functional,
        "formation_energy_per_atom": 0.52,
        "cohesive_energy_per_atom": -4.27,
        "provenance": {"original_mp_id": "mp-999484", "md_step": i},
    }
    doc.update(changes)
    return doc


def write_matpes(path: Path, documents: list, *, lines: bool, gz: bool, raw_lines: dict[int, str] | None = None):
    if lines:
        rows = [json.dumps(doc) for doc in documents]
        for index, text in (raw_lines or {}).items():
            rows.insert(index, text)
        text = "\n".join(rows) + "\n"
    else:
        text = json.dumps(documents, indent=1)
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def bad_matpes_docs() -> list[dict]:
    no_forces = matpes_doc(12)
    del no_forces["forces"]
    unknown = matpes_doc(14)
    unknown["structure"]["sites"][0]["species"][0]["element"] = "Xx"
    flat = matpes_doc(15)
    flat["structure"]["lattice"]["matrix"] = [[3.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 3.5]]
    empty = matpes_doc(16)
    empty["structure"]["sites"] = []
    no_functional = matpes_doc(18)
    del no_functional["functional"]
    return [
        matpes_doc(11, energy=float("nan")),
        no_forces,
        matpes_doc(13, forces=[[0.0, 0.0, 0.0]]),
        unknown,
        flat,
        empty,
        matpes_doc(17, functional="B3LYP-ish"),
        no_functional,
        matpes_doc(19, forces=[[0.0, 0.0, 0.0], [1.0, 2.0]]),
    ]

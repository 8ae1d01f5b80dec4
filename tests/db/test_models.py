"""Integrity lives in the database: every CHECK and unique key rejects a bad row."""

from __future__ import annotations

import hashlib
import math

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from crossfid.db.models import Frame, Material, RawDocument, ReferenceEntry, Source, Task

N = 2  # atoms in the test frame
LATTICE = [3.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 4.0]


def sha(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


def good_frame(task_id: int, step: int = 0, **overrides) -> Frame:
    values = dict(
        task_id=task_id,
        ionic_step=step,
        n_atoms=N,
        lattice=list(LATTICE),
        atomic_numbers=[26, 8],
        frac_coords=[0.0, 0.0, 0.0, 0.5, 0.5, 0.5],
        energy=-14.0,
        corrected_energy=-15.4,
        forces=[0.3, 0.0, 0.4, -0.3, 0.0, -0.4],
        stress=[0.1, 0, 0, 0, 0.1, 0, 0, 0, 0.1],
        magmoms=[3.5, 0.1],
        n_electronic_steps=20,
        scf_converged=True,
        content_hash=sha(f"frame-{task_id}-{step}"),
    )
    values.update(overrides)
    return Frame(**values)


@pytest.fixture
def ids(engine):
    """A source, a material and a task to hang test rows on."""
    with Session(engine) as session:
        source = Source(name="test", kind="test")
        material = Material(external_id="mp-19770", formula="FeO", chemsys="Fe-O", elements=["Fe", "O"])
        session.add_all([source, material])
        session.flush()
        task = Task(
            material_id=material.id,
            source_id=source.id,
            external_id="mp-1",
            fidelity="GGA+U",
            run_type="PBE+U",
            task_type="relax",
            hubbards={"Fe": 5.3},
            is_hubbard=True,
        )
        session.add(task)
        session.commit()
        return {"source": source.id, "material": material.id, "task": task.id}


def _insert(engine, obj) -> None:
    with Session(engine) as session:
        session.add(obj)
        session.commit()


def test_good_frame_is_stored_with_generated_columns(engine, ids):
    _insert(engine, good_frame(ids["task"]))
    with engine.connect() as conn:
        row = conn.execute(text("SELECT energy_per_atom, max_force, volume FROM frames")).one()
        view = conn.execute(
            text("SELECT material, formula, chemsys, fidelity, run_type, max_force FROM v_frames")
        ).one()
    assert row.energy_per_atom == pytest.approx(-7.0)
    assert row.max_force == pytest.approx(0.5)
    assert row.volume == pytest.approx(36.0)
    assert tuple(view) == ("mp-19770", "FeO", "Fe-O", "GGA+U", "PBE+U", pytest.approx(0.5))


def test_frame_without_labels_is_allowed(engine, ids):
    """Missing labels are for curation rules to judge, not a schema error."""
    _insert(
        engine,
        good_frame(ids["task"], energy=None, corrected_energy=None, forces=None, stress=None, magmoms=None),
    )
    with engine.connect() as conn:
        assert conn.execute(text("SELECT energy_per_atom, max_force FROM frames")).one() == (None, None)


BAD_FRAMES = {
    "nan_energy": dict(energy=math.nan),
    "inf_energy": dict(energy=math.inf),
    "minus_inf_corrected_energy": dict(corrected_energy=-math.inf),
    "forces_wrong_length": dict(forces=[0.0] * 5),
    "forces_nan": dict(forces=[0.0, 0.0, math.nan, 0.0, 0.0, 0.0]),
    "stress_voigt_not_3x3": dict(stress=[0.0] * 6),
    "stress_inf": dict(stress=[math.inf] + [0.0] * 8),
    "magmoms_wrong_length": dict(magmoms=[1.0]),
    "magmoms_nan": dict(magmoms=[math.nan, 0.0]),
    "n_atoms_zero": dict(n_atoms=0, atomic_numbers=[], frac_coords=[], forces=None, magmoms=None),
    "atomic_numbers_wrong_length": dict(atomic_numbers=[26]),
    "atomic_number_zero": dict(atomic_numbers=[0, 8]),
    "atomic_number_too_large": dict(atomic_numbers=[26, 119]),
    "coords_wrong_length": dict(frac_coords=[0.0] * 5),
    "coords_nan": dict(frac_coords=[math.nan] + [0.0] * 5),
    "lattice_wrong_length": dict(lattice=[3.0] * 8),
    "lattice_singular": dict(lattice=[1.0, 0, 0, 2.0, 0, 0, 0, 0, 1.0]),
    "negative_ionic_step": dict(ionic_step=-1),
    "negative_electronic_steps": dict(n_electronic_steps=-3),
    "bad_content_hash": dict(content_hash="not-a-hash"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frame_is_rejected(engine, ids, case):
    with pytest.raises(IntegrityError):
        _insert(engine, good_frame(ids["task"], **BAD_FRAMES[case]))


def test_duplicate_ionic_step_is_rejected(engine, ids):
    _insert(engine, good_frame(ids["task"], step=0))
    with pytest.raises(IntegrityError, match="uq_frames_task_id_ionic_step"):
        _insert(engine, good_frame(ids["task"], step=0, content_hash=sha("other")))


def _task(ids, **overrides) -> Task:
    values = dict(
        material_id=ids["material"],
        source_id=ids["source"],
        external_id="mp-2",
        fidelity="r2SCAN",
        run_type="r2SCAN",
        task_type="static",
    )
    values.update(overrides)
    return Task(**values)


def test_duplicate_task_is_rejected(engine, ids):
    with pytest.raises(IntegrityError, match="uq_tasks_source_id_external_id"):
        _insert(engine, _task(ids, external_id="mp-1"))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(fidelity="LDA-ish"),  # not in the vocabulary
        dict(task_type="nscf"),
        dict(is_hubbard=True),  # flag without U values
        dict(hubbards={"Fe": 5.3}, is_hubbard=False),
        dict(material_id=10**9),  # dangling foreign key
    ],
    ids=[
        "unknown_fidelity",
        "unknown_task_type",
        "hubbard_flag_without_u",
        "u_without_flag",
        "missing_material",
    ],
)
def test_bad_task_is_rejected(engine, ids, overrides):
    with pytest.raises(IntegrityError):
        _insert(engine, _task(ids, **overrides))


def test_material_chemsys_must_match_elements(engine):
    with pytest.raises(IntegrityError, match="chemsys"):
        _insert(engine, Material(external_id="mp-x", formula="FeO", chemsys="O-Fe", elements=["Fe", "O"]))


def test_duplicate_material_is_rejected(engine, ids):
    with pytest.raises(IntegrityError, match="uq_materials_external_id"):
        _insert(engine, Material(external_id="mp-19770", formula="FeO", chemsys="Fe-O", elements=["Fe", "O"]))


def test_one_reference_entry_per_material_and_fidelity(engine, ids):
    entry = dict(material_id=ids["material"], fidelity="GGA+U", source_id=ids["source"], energy_per_atom=-7.0)
    _insert(engine, ReferenceEntry(**entry))
    with pytest.raises(IntegrityError, match="uq_reference_entries_material_id_fidelity"):
        _insert(engine, ReferenceEntry(**entry))
    with pytest.raises(IntegrityError):
        _insert(engine, ReferenceEntry(**{**entry, "fidelity": "r2SCAN", "energy_per_atom": math.nan}))


def test_raw_documents_are_content_addressed(engine, ids):
    doc = dict(source_id=ids["source"], format="json", compression="none", size_bytes=2, content=b"{}")
    _insert(engine, RawDocument(sha256=sha("{}"), **doc))
    with pytest.raises(IntegrityError, match="uq_raw_documents_sha256"):
        _insert(engine, RawDocument(sha256=sha("{}"), **doc))
    with pytest.raises(IntegrityError):
        _insert(engine, RawDocument(sha256="ABC", **doc))

"""The demo source: a seeded multi-fidelity corpus relaxed by CHGNet and labelled by SevenNet-MF-0 (or CHGNet)."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from crossfid.demo import generator as demo
from crossfid.demo.generator import (
    FLAW_KINDS,
    DemoSettings,
    FlawRates,
    default_corpus_path,
    generate_demo_corpus,
    load_demo_manifest,
    predict_frame,
    relax_frames,
)
from crossfid.ingest.demo import FORMAT_VERSION, read_demo_corpus
from crossfid.ingest.records import Bundle, Refusal, validate_bundle
from crossfid.potentials.base import ModelSpec, load_potential
from crossfid.potentials.sevennet import sevenn_version
from crossfid.structures.prototypes import CATALOGUE, ELEMENTAL_PHASES, MOLECULE_BOX, MP_HUBBARD_U, build_prototype
from crossfid.vocabulary import FIDELITY_NAMES

#: high flaw rates so that a 4-material corpus contains every kind of flaw
SETTINGS = DemoSettings(
    max_steps=8,
    static_rate=0.5,
    flaws=FlawRates(
        final_energy_mismatch=0.5, high_energy=0.5, scf_unconverged=0.15, missing_forces=0.15, near_duplicate=0.2
    ),
)
N_MATERIALS = 4
SEED = 7


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoManifest:
    path = tmp_path_factory.mktemp("demo") / "corpus.jsonl.gz"
    calls: list[tuple[int, int]] = []
    manifest = generate_demo_corpus(
        path, n_materials=N_MATERIALS, seed=SEED, settings=SETTINGS, progress=lambda d, t: calls.append((d, t))
    )
    # the chosen materials and the elemental phases added for their elements
    total = manifest.n_materials
    assert total > N_MATERIALS and calls[0] == (0, total) and calls[-1] == (total, total)
    return manifest


@pytest.fixture(scope="module")
def bundles(corpus: demo.DemoManifest) -> list[Bundle]:
    records = list(read_demo_corpus(corpus.path))
    assert all(isinstance(r, Bundle) for r in records), [r for r in records if isinstance(r, Refusal)]
    return records


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def _reference(bundle: Bundle):
    (entry,) = bundle.references
    return entry


# --------------------------------------------------------------------------- catalogue and paths


def test_catalogue_prototypes_are_small_and_follow_the_u_rule() -> None:
    for proto in CATALOGUE:
        structure = build_prototype(proto)
        assert 1 <= len(structure) <= 12, proto
        assert structure.composition.reduced_formula == proto.formula
        has_anion = bool({"O", "F"} & proto.elements)
        expected = {el: MP_HUBBARD_U[el] for el in sorted(proto.elements) if el in MP_HUBBARD_U and has_anion}
        assert (proto.hubbards or {}) == expected
    assert sum(1 for p in CATALOGUE if p.hubbards) >= 10
    assert {"Fe", "Mn", "Co", "Ni", "Cr", "V"} <= {el for p in CATALOGUE if p.hubbards for el in p.hubbards}
    # U metals without O/F (metals, sulfide, nitride) stay GGA
    assert {p.formula for p in CATALOGUE if p.elements & set(MP_HUBBARD_U) and not p.hubbards} >= {"Fe", "Ni", "MnS"}


def test_elemental_phases_cover_the_catalogue_and_are_small() -> None:
    from pymatgen.core import Composition

    assert {el for p in CATALOGUE for el in p.elements} <= set(ELEMENTAL_PHASES)
    for element, proto in ELEMENTAL_PHASES.items():
        structure = build_prototype(proto)
        assert 1 <= len(structure) <= 12, proto
        assert {site.specie.symbol for site in structure} == {element}
        assert structure.composition.reduced_formula == proto.formula == Composition(element).reduced_formula
        assert proto.hubbards is None and proto.low_fidelity == "GGA"  # elements are never GGA+U (MP)
        distances = structure.distance_matrix + np.eye(len(structure)) * 1e3
        if proto.molecular:  # one molecule in a 10 Å box: bonded inside, ≥ 6 Å from its images
            assert structure.lattice.abc == pytest.approx((MOLECULE_BOX,) * 3) and proto.note
            assert 0.7 <= distances.min() <= 2.7
            assert np.ptp(structure.cart_coords, axis=0).max() <= MOLECULE_BOX - 5.0
        elif len(structure) > 1:  # no overlapping atoms
            assert distances.min() > 1.3
    # molecular solids as dimers, α-S as an S8 ring; catalogue elements keep their catalogue entry
    assert {el for el, p in ELEMENTAL_PHASES.items() if p.prototype == "dimer"} == {"H", "N", "O", "F", "Cl", "Br", "I"}
    assert ELEMENTAL_PHASES["S"].molecular and len(build_prototype(ELEMENTAL_PHASES["S"])) == 8
    assert all(ELEMENTAL_PHASES[p.formula] is p for p in CATALOGUE if len(p.elements) == 1)


@pytest.mark.parametrize("seed", range(6))
def test_every_element_gets_one_elemental_phase_at_gga_and_r2scan(seed: int) -> None:
    from pymatgen.core import Composition

    specs = demo._choose_materials(24, seed, demo.DEMO_FIDELITIES, DemoSettings())
    compounds = [s for s in specs if not s.material_id.startswith("demo-el-")]
    assert [s.material_id for s in compounds] == [f"demo-{i:04d}" for i in range(1, 25)]
    elements = {el.symbol for s in compounds for el in Composition(s.formula).elements}
    elemental = {}
    for spec in specs:
        if len(Composition(spec.formula).elements) == 1:
            element = Composition(spec.formula).elements[0].symbol
            assert element not in elemental  # one phase per element, never a duplicate material
            elemental[element] = spec
    assert set(elemental) == elements
    for element, spec in elemental.items():
        assert spec.formula == ELEMENTAL_PHASES[element].formula
        assert spec.groups == ("GGA", "r2SCAN")  # never thinned to one fidelity, never GGA+U
        assert spec.material_id in (f"demo-el-{element}", *(s.material_id for s in compounds))
    # the catalogue's own elemental materials serve as references: no second material of the same phase
    assert not {s.material_id for s in specs} & {f"demo-el-{s.formula}" for s in compounds}
    assert len({s.index for s in specs}) == len(specs)
    # only the requested fidelities; none without the setting
    r2scan_only = demo._choose_materials(24, seed, ("r2SCAN",), DemoSettings())
    assert {s.groups for s in r2scan_only if s.material_id.startswith("demo-el-")} == {("r2SCAN",)}
    assert demo._choose_materials(24, seed, ("GGA+U",), DemoSettings()) == demo._choose_materials(
        24, seed, ("GGA+U",), DemoSettings(elemental_phases=False)
    )
    without = demo._choose_materials(24, seed, demo.DEMO_FIDELITIES, DemoSettings(elemental_phases=False))
    assert [s.material_id for s in without] == [s.material_id for s in compounds]


def test_default_corpus_path(tmp_path: Path) -> None:
    path = default_corpus_path(tmp_path, 24, 0)
    assert path.parent == tmp_path / "demo"
    assert path.name == f"demo-v{FORMAT_VERSION}-n24-seed0.jsonl.gz"
    assert default_corpus_path(tmp_path, 24, 1) != path != default_corpus_path(tmp_path, 12, 0)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fidelities"):
        generate_demo_corpus(tmp_path / "x.jsonl.gz", n_materials=1, fidelities=("HSE06",))
    with pytest.raises(ValueError, match="n_materials"):
        generate_demo_corpus(tmp_path / "x.jsonl.gz", n_materials=len(CATALOGUE) + 1)
    with pytest.raises(ValueError, match="labeller"):
        generate_demo_corpus(tmp_path / "x.jsonl.gz", n_materials=1, settings=DemoSettings(labeller="mace"))
    assert not (tmp_path / "x.jsonl.gz").exists()


# --------------------------------------------------------------------------- the file


def test_same_seed_gives_identical_bytes(corpus: demo.DemoManifest, tmp_path: Path) -> None:
    again = generate_demo_corpus(tmp_path / "again.jsonl.gz", n_materials=N_MATERIALS, seed=SEED, settings=SETTINGS)
    assert again.path.read_bytes() == corpus.path.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name != "again.jsonl.gz"]  # no temporary file left


def test_different_seed_gives_a_different_corpus(corpus: demo.DemoManifest, tmp_path: Path) -> None:
    settings = dataclasses.replace(SETTINGS, max_steps=2)
    other = generate_demo_corpus(tmp_path / "other.jsonl.gz", n_materials=2, seed=SEED + 1, settings=settings)
    assert _lines(other.path)[1] != _lines(corpus.path)[1]


def test_header_and_manifest(corpus: demo.DemoManifest) -> None:
    lines = _lines(corpus.path)
    header = json.loads(lines[0])
    assert header["kind"] == "header" and header["seed"] == SEED and header["format_version"] == FORMAT_VERSION
    assert header["chgnet_version"] == corpus.chgnet_version and header["sevenn_version"] == sevenn_version()
    label_models = {"GGA": "sevennet-mf-0-pbe", "GGA+U": "sevennet-mf-0-pbe", "r2SCAN": "sevennet-mf-0-r2scan"}
    assert header["label_models"] == corpus.label_models == label_models
    assert header["relax_models"] == {"GGA": "chgnet-0.3.0", "GGA+U": "chgnet-0.3.0", "r2SCAN": "chgnet-r2scan"}
    assert header["settings"]["labeller"] == "sevennet" and "SevenNet-MF-0" in header["label_source"]
    assert "timestamp" not in lines[0] and "created" not in lines[0]
    assert corpus.n_documents == len(lines) - 1
    added = {json.loads(line)["material_id"] for line in lines[1:]} - {f"demo-{i:04d}" for i in range(1, 5)}
    assert added and all(m.startswith("demo-el-") for m in added)
    assert corpus.n_materials == N_MATERIALS + len(added) and corpus.n_elemental >= len(added)
    assert header["settings"]["elemental_phases"] is True
    assert corpus.seconds is not None and corpus.seconds > 0
    reread = load_demo_manifest(corpus.path)
    assert dataclasses.replace(reread, seconds=corpus.seconds) == corpus
    assert set(corpus.flaws) == set(FLAW_KINDS)


def test_generation_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "corpus.jsonl.gz"
    path.write_bytes(b"previous corpus")

    def boom(spec, settings):
        raise RuntimeError("worker died")

    monkeypatch.setattr(demo, "_material_documents", boom)
    with pytest.raises(RuntimeError, match="worker died"):
        generate_demo_corpus(path, n_materials=2, seed=0)
    assert path.read_bytes() == b"previous corpus"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.jsonl.gz"]


# --------------------------------------------------------------------------- canonical records


def test_bundles_are_valid_records(corpus: demo.DemoManifest, bundles: list[Bundle]) -> None:
    assert len(bundles) == corpus.n_documents
    assert sum(len(b.tasks) for b in bundles) == corpus.n_tasks
    assert sum(len(t.frames) for b in bundles for t in b.tasks) == corpus.n_frames
    for bundle in bundles:
        cleaned, refusals = validate_bundle(bundle)
        assert refusals == [], refusals  # flaws are data problems for curation, not invalid records
        assert cleaned is not None and len(cleaned.tasks) == len(bundle.tasks)
        assert bundle.material.external_id.startswith("demo-")
        assert bundle.location.startswith(f"{corpus.path.name}:line ")
        assert bundle.raw is not None and bundle.raw.format == "json"
        assert json.loads(bundle.raw.content)["material_id"] == bundle.material.external_id
        document = json.loads(bundle.raw.content)
        for task in bundle.tasks:
            assert task.code == "SevenNet-surrogate" and task.code_version == sevenn_version()
            assert "SevenNet-MF-0 surrogate" in task.run_type
            params = task.input_parameters
            assert "not DFT" in params["label_source"] and "SevenNet-MF-0" in params["label_source"]
            label_model = corpus.label_models[task.fidelity]
            assert params["label_model"] == document["provenance"]["label_model"] == label_model
            assert params["relax_model"] == ("chgnet-r2scan" if task.fidelity == "r2SCAN" else "chgnet-0.3.0")
            assert task.completed_at is None
            assert [f.ionic_step for f in task.frames] == list(range(len(task.frames)))
            for frame in task.frames:
                assert frame.energy is not None and frame.stress.shape == (3, 3)
                assert frame.magmoms is None  # SevenNet predicts no magnetic moments
                nelm = task.input_parameters["NELM"]
                assert 0 < frame.n_electronic_steps <= nelm
                assert frame.scf_converged == (frame.n_electronic_steps < nelm)


def test_both_fidelities_present_on_shared_materials(bundles: list[Bundle]) -> None:
    fidelities: dict[str, set[str]] = {}
    for bundle in bundles:
        (entry,) = bundle.references
        assert entry.fidelity in FIDELITY_NAMES
        assert {t.fidelity for t in bundle.tasks} == {entry.fidelity}
        fidelities.setdefault(bundle.material.external_id, set()).add(entry.fidelity)
    assert {"GGA", "GGA+U", "r2SCAN"} <= set().union(*fidelities.values())
    shared = [m for m, f in fidelities.items() if "r2SCAN" in f and f & {"GGA", "GGA+U"}]
    assert len(shared) >= 2
    assert all(len(f & {"GGA", "GGA+U"}) <= 1 for f in fidelities.values())


def test_elemental_reference_at_both_fidelities_for_every_element(
    corpus: demo.DemoManifest, bundles: list[Bundle]
) -> None:
    """Every element of the corpus's compounds has its ground-state phase as a relaxed reference at GGA and r2SCAN."""
    from pymatgen.core import Structure

    compounds = [b for b in bundles if len(b.material.elements) > 1]
    elements = {el for b in compounds for el in b.material.elements}
    references: dict[tuple[str, str], list] = {}
    for bundle in bundles:
        if len(bundle.material.elements) == 1:
            (element,) = bundle.material.elements
            (entry,) = bundle.references
            references.setdefault((element, entry.fidelity), []).append((bundle, entry))
    assert set(references) == {(el, fidelity) for el in elements for fidelity in ("GGA", "r2SCAN")}
    for (element, fidelity), found in references.items():
        ((bundle, entry),) = found  # one material per element and fidelity
        proto = ELEMENTAL_PHASES[element]
        assert bundle.material.external_id == f"demo-el-{element}"
        relaxed = Structure.from_dict(entry.structure)
        assert relaxed.composition.reduced_formula == proto.formula and entry.n_atoms == len(relaxed)
        assert np.isfinite(entry.energy_per_atom) and entry.entry_id == f"demo-el-{element}-{fidelity.lower()}"
        (relax,) = [t for t in bundle.tasks if t.external_id == entry.task_external_id]
        assert all("surrogate" in t.run_type and t.hubbards is None for t in bundle.tasks)
        document = json.loads(bundle.raw.content)
        phase = document["provenance"]["elemental_phase"]
        assert phase == {
            "element": element,
            "prototype": proto.prototype,
            "relax_cell": not proto.molecular,
            "approximation": proto.note or None,
        }
        if proto.molecular:  # a molecule in a box is relaxed at fixed cell, and stays one bonded molecule
            squeezed = {f["ionic_step"] for f in document["flaws"] if f["kind"] == "high_energy"}
            kept = [f for f in relax.frames if f.ionic_step not in squeezed]
            assert relax.input_parameters["ISIF"] == 2 and "fixed cell" in relax.input_parameters["optimizer"]
            assert all(np.array_equal(f.lattice, relax.frames[-1].lattice) for f in kept)
        if proto.prototype == "dimer":
            assert relaxed.get_distance(0, 1) == pytest.approx(proto.params[1], rel=0.2)
    assert {("O", "GGA"), ("F", "r2SCAN")} <= set(references)  # this corpus has the gas references


def test_hubbards_exactly_for_u_materials(bundles: list[Bundle]) -> None:
    from crossfid.ingest.fidelity import classify_incar

    for bundle in bundles:
        elements = set(bundle.material.elements)
        u_material = bool(elements & {"O", "F"}) and bool(elements & set(MP_HUBBARD_U))
        expected = {el: MP_HUBBARD_U[el] for el in sorted(elements) if el in MP_HUBBARD_U}
        for task in bundle.tasks:
            params = task.input_parameters
            if task.fidelity == "GGA+U":
                assert u_material and task.hubbards == expected
                assert params["LDAU"] is True and params["LDAUTYPE"] == 2
                assert dict(zip(params["species"], params["LDAUU"], strict=True)) == {
                    el: expected.get(el, 0.0) for el in params["species"]
                }
                assert task.run_type == "PBE+U (SevenNet-MF-0 surrogate)"
            else:
                assert task.hubbards is None and params["LDAU"] is False
                assert task.fidelity == "r2SCAN" or not u_material
            # the INCAR says what the label says
            classified = classify_incar(params, species=params["species"])
            assert classified.fidelity == task.fidelity
            assert classified.hubbards == task.hubbards
            assert classified.task_type == task.task_type


def test_reference_is_the_final_relaxed_frame(bundles: list[Bundle]) -> None:
    for bundle in bundles:
        entry = _reference(bundle)
        (relax,) = [t for t in bundle.tasks if t.external_id == entry.task_external_id]
        assert relax.task_type == "relax"
        last = relax.frames[-1]
        assert entry.energy_per_atom == pytest.approx(last.energy_per_atom, abs=1e-12)
        assert entry.n_atoms == last.n_atoms
        from pymatgen.core import Structure

        relaxed = Structure.from_dict(entry.structure)
        assert np.allclose(relaxed.lattice.matrix, last.lattice)
        assert last.forces is not None and last.scf_converged
        assert np.abs(last.forces).max() < 5.0


def test_flaw_counts_match_the_file(corpus: demo.DemoManifest, bundles: list[Bundle]) -> None:
    assert all(corpus.flaws[kind] > 0 for kind in FLAW_KINDS), corpus.flaws
    found = dict.fromkeys(FLAW_KINDS, 0)
    recorded = dict.fromkeys(FLAW_KINDS, 0)
    for bundle in bundles:
        document = json.loads(bundle.raw.content)
        e_ref = _reference(bundle).energy_per_atom
        tasks = {t.external_id: t for t in bundle.tasks}
        for flaw in document["flaws"]:
            recorded[flaw["kind"]] += 1
            task = tasks[flaw["task_id"]]
            if flaw["kind"] == "near_duplicate":  # the recorded frame really is a near-duplicate of its original
                frame, original = task.frames[flaw["ionic_step"]], task.frames[flaw["duplicate_of"]]
                moved = np.linalg.norm((frame.frac_coords - original.frac_coords) @ frame.lattice, axis=1)
                assert moved.max() <= 1e-4 and np.array_equal(frame.lattice, original.lattice)
                assert abs(frame.energy_per_atom - original.energy_per_atom) <= 1e-3
                found["near_duplicate"] += 1
        for task in bundle.tasks:
            if abs(task.frames[-1].energy_per_atom - e_ref) > 0.02:
                found["final_energy_mismatch"] += 1
            for frame in task.frames:
                found["scf_unconverged"] += frame.scf_converged is False
                found["missing_forces"] += frame.forces is None
                found["high_energy"] += frame.energy_per_atom - e_ref > 1.0
    assert recorded == corpus.flaws
    assert found == corpus.flaws


def test_high_energy_frames_are_compressed(bundles: list[Bundle]) -> None:
    seen = 0
    for bundle in bundles:
        for flaw in json.loads(bundle.raw.content)["flaws"]:
            if flaw["kind"] == "high_energy":
                (task,) = [t for t in bundle.tasks if t.external_id == flaw["task_id"]]
                frame = task.frames[flaw["ionic_step"]]
                assert abs(np.linalg.det(frame.lattice)) < abs(np.linalg.det(task.frames[-1].lattice))
                elements = bundle.material.elements
                if len(elements) == 1 and ELEMENTAL_PHASES[elements[0]].molecular:
                    continue  # a squeezed molecule in a box of vacuum: high energy, small stress
                assert np.trace(frame.stress) < -30  # strongly compressed: large negative (compressive) stress
                seen += 1
    assert seen


# --------------------------------------------------------------------------- physics of the labels


def test_stress_sign_and_units_of_relaxation_frames() -> None:
    """A compressed cell wants to expand: negative (compressive) stress in GPa, ASE sign convention."""
    from pymatgen.core import Lattice, Structure

    potential = load_potential("chgnet-0.3.0")
    compressed = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.21 * 0.95), ["Mg", "O"], [[0, 0, 0], [0.5] * 3])
    frames = relax_frames(potential, compressed, fmax=0.05, steps=6)
    first = np.asarray(frames[0]["stress"])
    assert first.shape == (3, 3) and np.trace(first) < -30  # tens of GPa, not eV/Å³ (would be ~ -0.8)
    direct = potential.model.predict_structure(compressed, task="efsm")  # chgnet itself
    assert np.allclose(first, direct["s"], atol=1e-3)  # GPa, same as chgnet's prediction
    assert frames[0]["energy"] == pytest.approx(float(direct["e"]) * len(compressed), abs=1e-4)
    volumes = [abs(np.linalg.det(f["lattice"])) for f in frames]
    assert volumes[-1] > volumes[0]  # the cell expands
    assert frames[-1]["energy"] < frames[0]["energy"]
    # the observer's repeated final observation is dropped
    assert frames[-1]["frac_coords"] != frames[-2]["frac_coords"] or frames[-1]["lattice"] != frames[-2]["lattice"]
    stretched = compressed.copy()
    stretched.scale_lattice(compressed.volume * 1.3)
    assert np.trace(predict_frame(potential, stretched)["stress"]) > 0


def _sevennet_labels(name: str, structure) -> tuple[float, np.ndarray, np.ndarray]:
    """SevenNet's own ASE calculator on the structure: total energy eV, forces eV/Å, stress 3×3 GPa."""
    from ase import units
    from ase.stress import voigt_6_to_full_3x3_stress
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = AseAtomsAdaptor().get_atoms(structure)
    atoms.calc = load_potential(ModelSpec(name, family="SevenNet")).model  # the SevenNetCalculator itself
    stress = voigt_6_to_full_3x3_stress(np.asarray(atoms.get_stress(), dtype=float)) / units.GPa
    return float(atoms.get_potential_energy()), atoms.get_forces(), stress


def test_labels_are_sevennet_mf_0_predictions_of_the_frame_structure(bundles: list[Bundle]) -> None:
    """Every kind of frame (relaxation, static, high-energy, near-duplicate, shifted rerun) carries SevenNet-MF-0's
    single point of its own structure: PBE modality for GGA/GGA+U, R2SCAN for r2SCAN, to 1e-6."""
    import torch

    checked: set[str] = set()
    kinds: set[str] = set()
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as the generator
    try:
        for bundle in bundles:
            document = json.loads(bundle.raw.content)
            shifted = {f["task_id"]: f["shift_ev_per_atom"] for f in document["flaws"] if "shift_ev_per_atom" in f}
            flawed = {(f["task_id"], f["ionic_step"]): f["kind"] for f in document["flaws"] if "ionic_step" in f}
            for task in bundle.tasks:
                name = task.input_parameters["label_model"]
                assert name == ("sevennet-mf-0-r2scan" if task.fidelity == "r2SCAN" else "sevennet-mf-0-pbe")
                for frame in task.frames:
                    energy, forces, stress = _sevennet_labels(name, frame.to_structure())
                    shift = shifted.get(task.external_id, 0.0) * frame.n_atoms
                    assert frame.energy == pytest.approx(energy + shift, abs=1e-6)
                    if frame.forces is not None:
                        assert np.allclose(frame.forces, forces, atol=1e-6, rtol=0)
                    assert np.allclose(frame.stress, stress, atol=1e-6, rtol=0)
                    kinds.add(flawed.get((task.external_id, frame.ionic_step), task.task_type))
                checked.add(task.fidelity)
    finally:
        torch.set_num_threads(before)
    assert checked == {"GGA", "GGA+U", "r2SCAN"}
    assert kinds >= {"relax", "static", "high_energy", "near_duplicate", "missing_forces", "scf_unconverged"}


def test_sevennet_labels_are_not_the_chgnet_labels(bundles: list[Bundle]) -> None:
    """The labeller differs from the relaxing (and benchmarked) CHGNet models: their energies disagree."""
    differences = []
    for bundle in bundles[:4]:
        entry = _reference(bundle)
        (relax,) = [t for t in bundle.tasks if t.external_id == entry.task_external_id]
        model = load_potential(relax.input_parameters["relax_model"]).model
        frame = relax.frames[-1]
        differences.append(
            abs(float(model.predict_structure(frame.to_structure(), task="e")["e"]) - entry.energy_per_atom)
        )
    assert max(differences) > 1e-3  # eV/atom


def test_chgnet_labeller_labels_with_the_relaxing_models(tmp_path: Path) -> None:
    """``labeller="chgnet"``: the relaxations' own CHGNet labels (with magmoms), as the corpus was first made."""
    settings = dataclasses.replace(
        SETTINGS, labeller="chgnet", max_steps=3, elemental_phases=False, static_rate=1.0, flaws=FlawRates()
    )
    manifest = generate_demo_corpus(tmp_path / "chgnet.jsonl.gz", n_materials=1, seed=SEED, settings=settings)
    header = json.loads(_lines(manifest.path)[0])
    assert "sevenn_version" not in header and header["settings"]["labeller"] == "chgnet"
    assert manifest.label_models == {f: header["relax_models"][f] for f in manifest.fidelities}
    records = list(read_demo_corpus(manifest.path))
    assert records and all(isinstance(r, Bundle) for r in records)
    for bundle in records:
        for task in bundle.tasks:
            assert task.code == "CHGNet-surrogate" and task.code_version == manifest.chgnet_version
            assert "(CHGNet surrogate)" in task.run_type
            name = task.input_parameters["label_model"]
            assert name == task.input_parameters["relax_model"] == manifest.label_models[task.fidelity]
            model = load_potential(name).model
            for frame in (task.frames[0], task.frames[-1]):
                assert frame.magmoms is not None and frame.magmoms.shape == (frame.n_atoms,)
                prediction = model.predict_structure(frame.to_structure(), task="efsm")
                assert float(prediction["e"]) == pytest.approx(frame.energy_per_atom, abs=1e-4)
                assert np.allclose(prediction["s"], frame.stress, atol=1e-2)


# --------------------------------------------------------------------------- bad input


def test_corrupted_lines_become_refusals(corpus: demo.DemoManifest, tmp_path: Path) -> None:
    lines = _lines(corpus.path)
    broken = json.loads(lines[2])
    del broken["tasks"]
    lines[1] = lines[1][: len(lines[1]) // 2]  # truncated JSON
    lines[2] = json.dumps(broken)  # valid JSON, not a task group
    lines[3] = "[1, 2, 3]"
    path = tmp_path / "corrupt.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    records = list(read_demo_corpus(path))
    refusals = [r for r in records if isinstance(r, Refusal)]
    assert [r.location for r in refusals] == [
        "corrupt.jsonl.gz:line 2",
        "corrupt.jsonl.gz:line 3",
        "corrupt.jsonl.gz:line 4",
    ]
    assert "invalid JSON" in refusals[0].reason and refusals[0].raw_text
    assert "tasks" in refusals[1].reason
    assert "JSON object" in refusals[2].reason
    assert sum(isinstance(r, Bundle) for r in records) == len(lines) - 4


def test_truncated_gzip_stream_becomes_a_refusal(corpus: demo.DemoManifest, tmp_path: Path) -> None:
    data = corpus.path.read_bytes()
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    records = list(read_demo_corpus(path))
    assert isinstance(records[-1], Refusal) and "gzip" in records[-1].reason
    assert all(isinstance(r, Bundle) for r in records[:-1])


def test_wrong_format_version_is_refused(corpus: demo.DemoManifest, tmp_path: Path) -> None:
    lines = _lines(corpus.path)
    document = json.loads(lines[1])
    document["format_version"] = 99
    path = tmp_path / "future.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(lines[0] + "\n" + json.dumps(document) + "\n")
    (refusal,) = read_demo_corpus(path)
    assert isinstance(refusal, Refusal) and "version" in refusal.reason


def test_version_1_corpora_are_still_read(corpus: demo.DemoManifest, tmp_path: Path) -> None:
    lines = _lines(corpus.path)[:3]
    old = [json.loads(line) | {"format_version": 1} for line in lines]
    path = tmp_path / "v1.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(document) + "\n" for document in old))
    records = list(read_demo_corpus(path))
    assert len(records) == 2 and all(isinstance(r, Bundle) for r in records)
    assert load_demo_manifest(path).format_version == 1


# --------------------------------------------------------------------------- Dask


def test_dask_gives_the_same_file(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    settings = dataclasses.replace(SETTINGS, max_steps=4)
    serial = generate_demo_corpus(tmp_path / "serial.jsonl.gz", n_materials=3, seed=SEED, settings=settings)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        calls: list[tuple[int, int]] = []
        distributed = generate_demo_corpus(
            tmp_path / "dask.jsonl.gz",
            n_materials=3,
            seed=SEED,
            settings=settings,
            client=client,
            progress=lambda d, t: calls.append((d, t)),
        )
    assert calls[-1] == (distributed.n_materials,) * 2 and distributed.n_materials > 3
    assert distributed.path.read_bytes() == serial.path.read_bytes()


# --------------------------------------------------------------------------- into the database


def test_corpus_ingests_whole_and_its_flaws_are_visible_in_sql(corpus: demo.DemoManifest, engine) -> None:
    from sqlalchemy import text

    from crossfid.ingest.loader import ingest

    summary = ingest(engine, "demo", "demo", read_demo_corpus(corpus.path), description="surrogate labels, not DFT")
    assert summary.quarantined == 0
    assert (summary.tasks_added, summary.frames_added, summary.references_added) == (
        corpus.n_tasks,
        corpus.n_frames,
        corpus.n_references,
    )
    with engine.connect() as conn:
        unconverged = conn.execute(text("SELECT count(*) FROM frames WHERE scf_converged = false")).scalar_one()
        no_forces = conn.execute(text("SELECT count(*) FROM frames WHERE forces IS NULL")).scalar_one()
        codes = set(conn.execute(text("SELECT DISTINCT code FROM tasks")).scalars())
        fidelities = set(conn.execute(text("SELECT DISTINCT fidelity FROM v_frames")).scalars())
    assert unconverged == corpus.flaws["scf_unconverged"]
    assert no_forces == corpus.flaws["missing_forces"]
    assert codes == {"SevenNet-surrogate"}
    assert fidelities <= {"GGA", "GGA+U", "r2SCAN"} and "r2SCAN" in fidelities
    # the elemental phases are reference entries with structures at GGA and r2SCAN, for every element
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT m.elements, r.fidelity, r.structure IS NOT NULL AS has_structure FROM reference_entries r "
                "JOIN materials m ON m.id = r.material_id WHERE m.n_elements = 1"
            )
        ).all()
        elements = set(conn.execute(text("SELECT DISTINCT unnest(elements) FROM materials")).scalars())
    assert all(row.has_structure for row in rows)
    assert {(row.elements[0], row.fidelity) for row in rows} == {(el, f) for el in elements for f in ("GGA", "r2SCAN")}
    again = ingest(engine, "demo", "demo", read_demo_corpus(corpus.path))
    assert (again.tasks_added, again.frames_added) == (0, 0)

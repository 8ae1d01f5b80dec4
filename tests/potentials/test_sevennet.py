"""Peer potentials: the SevenNet models shipped in the sevenn wheel and any ASE calculator (no database)."""

from __future__ import annotations

import contextlib
import io
import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crossfid.errors import InputError, IntegrityError, NotFoundError
from crossfid.hashing import sha256_file
from crossfid.potentials.ase_calculator import AsePotential, calculator_spec, resolve_factory
from crossfid.potentials.base import ModelSpec, Potential, encode_options, load_potential, potential_class
from crossfid.potentials.sevennet import SHIPPED_MODELS, SevenNetPotential, sevenn_version


def _spec(name: str) -> ModelSpec:
    return ModelSpec(name, family="SevenNet")


def _mgo(a: float = 4.21) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(autouse=True)
def _one_thread():
    with SevenNetPotential.single_thread():
        yield


def test_shipped_models_are_the_checkpoints_in_the_sevenn_wheel():
    assert SHIPPED_MODELS["sevennet-0"].weights_file().is_file()  # imports sevenn without its import-time warning
    from sevenn.util import pretrained_name_to_path

    assert sevenn_version().startswith("0.13.")
    for model in SHIPPED_MODELS.values():
        path = model.weights_file()
        assert str(path) == pretrained_name_to_path(model.sevenn_name)  # sevenn's own resolution (file present)
        assert sha256_file(path) == model.sha256
        assert model.sevenn_name in model.load_call and (model.modal is None or model.modal in model.load_call)
    assert {m.name: m.fidelities for m in SHIPPED_MODELS.values()} == {
        "sevennet-0": ("GGA", "GGA+U"),
        "sevennet-mf-0-pbe": ("GGA", "GGA+U"),
        "sevennet-mf-0-r2scan": ("r2SCAN",),
    }


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_shipped_models_load_quietly_once_and_predict_in_crossfid_units(name, capfd):
    potential = load_potential(_spec(name))
    assert isinstance(potential, SevenNetPotential) and potential.family == "SevenNet" and potential.name == name
    assert load_potential(_spec(name)) is potential  # cached per process
    assert capfd.readouterr().out == ""  # no banner on stdout
    assert potential.n_parameters() > 800_000

    compressed = _mgo(4.21 * 0.95).get_primitive_structure()
    (p,) = potential.predict([compressed])
    n = len(compressed)
    assert isinstance(p.energy, float) and -15 < p.energy < 0  # eV/atom
    assert p.forces.shape == (n, 3) and p.stress.shape == (3, 3) and p.magmoms.shape == (n,)
    assert np.isnan(p.magmoms).all()  # SevenNet predicts no magnetic moments
    assert np.trace(p.stress) < -30  # compressed: compressive, tens of GPa (not eV/Å³)
    (stretched,) = potential.predict([_mgo(4.21 * 1.08).get_primitive_structure()])
    assert np.trace(stretched.stress) > 0  # tensile positive


def test_stress_is_ase_stress_in_gpa_and_the_strain_derivative_of_the_energy():
    """Stress = (1/V) dE/dε (ASE sign, tensile positive), checked against a finite difference of the energy."""
    from ase import units
    from pymatgen.io.ase import AseAtomsAdaptor

    potential = load_potential(_spec("sevennet-mf-0-r2scan"))
    structure = _mgo(4.3)  # the conventional cubic cell: lattice vector a is along x
    structure.translate_sites([0], [0.01, 0.02, 0.0])  # off the symmetric positions
    (p,) = potential.predict([structure])

    atoms = AseAtomsAdaptor().get_atoms(structure)
    atoms.calc = potential.model  # sevenn's own ASE calculator
    voigt = atoms.get_stress()  # eV/Å³, xx yy zz yz xz xy
    assert p.stress[0, 0] == pytest.approx(voigt[0] / units.GPa, rel=1e-6)
    assert p.stress[1, 2] == pytest.approx(voigt[3] / units.GPa, abs=1e-6)
    assert p.energy * len(structure) == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    assert np.allclose(p.forces, atoms.get_forces(), atol=1e-9)

    h = 1e-3
    energies = []
    for eps in (-h, h):
        strained = structure.copy()
        strained.apply_strain([eps, 0, 0])  # uniaxial xx strain (cubic cell along x)
        (q,) = potential.predict([strained])
        energies.append(q.energy * len(strained))
    derivative = (energies[1] - energies[0]) / (2 * h) / structure.volume / units.GPa  # GPa
    assert p.stress[0, 0] == pytest.approx(derivative, abs=0.05)


def test_relax_lowers_the_energy_and_returns_a_consistent_relaxation():
    potential = load_potential(_spec("sevennet-0"))
    start = _mgo(4.21 * 1.04)
    start.translate_sites([0], [0.02, 0.0, 0.01])
    relaxation = potential.relax(start, fmax=0.05, steps=30)
    n_obs = len(relaxation)
    assert n_obs == relaxation.n_steps + 1  # the initial structure and every ionic step, once
    assert relaxation.cells.shape == (n_obs, 3, 3) and relaxation.positions.shape == (n_obs, len(start), 3)
    assert relaxation.forces.shape == (n_obs, len(start), 3) and relaxation.stresses.shape == (n_obs, 3, 3)
    assert np.isnan(relaxation.magmoms).all() and relaxation.magmoms.shape == (n_obs, len(start))
    assert np.allclose(relaxation.cells[0], start.lattice.matrix) and np.allclose(
        relaxation.positions[0], start.cart_coords
    )
    assert relaxation.energies[-1] < relaxation.energies[0]
    assert relaxation.final_structure.volume < start.volume  # stretched cell shrinks
    assert relaxation.optimised_forces.shape == (len(start) + 3, 3)  # atoms + the cell filter's virial rows
    assert relaxation.converged(0.05)
    assert "magmom" not in relaxation.final_structure.site_properties  # NaN is not stored
    # the last recorded step is the final structure, and its labels are the model's single point
    final = relaxation.final_structure
    assert np.allclose(relaxation.cells[-1], final.lattice.matrix) and np.allclose(
        relaxation.positions[-1], final.cart_coords
    )
    (p,) = potential.predict([final])
    assert p.energy * len(final) == pytest.approx(relaxation.energies[-1], abs=1e-6)
    assert np.allclose(p.stress, relaxation.stresses[-1], atol=1e-5)

    fixed = potential.relax(start, fmax=0.05, steps=5, relax_cell=False)
    assert np.allclose(fixed.cells, start.lattice.matrix)  # the cell never moves
    assert fixed.optimised_forces.shape == (len(start), 3)


def test_peers_are_not_fine_tuned():
    potential = load_potential(_spec("sevennet-mf-0-pbe"))
    for call in (potential.atomref, lambda: potential.set_atomref(np.zeros(94)), potential.atomref_parameters):
        with pytest.raises(InputError, match="benchmarked, not fine-tuned"):
            call()
    with pytest.raises(InputError, match="benchmarked, not fine-tuned"):
        potential.new_untrained(0)
    assert potential.copy() is potential


def test_unknown_and_wrong_weights_are_refused(tmp_path):
    with pytest.raises(NotFoundError, match="ships with sevenn"):
        load_potential(_spec("sevennet-omni"))
    original = SHIPPED_MODELS["sevennet-0"]
    copy = tmp_path / "checkpoint.pth"
    shutil.copyfile(original.weights_file(), copy)
    own = ModelSpec("own-7net", kind="trained", path=str(copy), sha256=original.sha256, family="SevenNet")
    loaded = load_potential(own)
    assert isinstance(loaded, SevenNetPotential)
    (a,), (b,) = loaded.predict([_mgo()]), load_potential(_spec("sevennet-0")).predict([_mgo()])
    assert a.energy == pytest.approx(b.energy, abs=1e-9)
    with pytest.raises(IntegrityError, match="sha256"):
        load_potential(ModelSpec("bad-7net", kind="trained", path=str(copy), sha256="0" * 64, family="SevenNet"))
    with pytest.raises(NotFoundError, match="missing"):
        load_potential(
            ModelSpec("gone", kind="trained", path=str(tmp_path / "no.pth"), sha256="0" * 64, family="SevenNet")
        )
    # a multi-fidelity checkpoint of one's own takes its modality from the options
    mf = tmp_path / "mf.pth"
    shutil.copyfile(SHIPPED_MODELS["sevennet-mf-0-r2scan"].weights_file(), mf)
    r2scan = ModelSpec(
        "own-mf", kind="trained", path=str(mf), sha256=sha256_file(mf), family="SevenNet",
        options=encode_options({"modal": "R2SCAN"}),
    )  # fmt: skip
    (c,), (d,) = (
        load_potential(r2scan).predict([_mgo()]),
        load_potential(_spec("sevennet-mf-0-r2scan")).predict([_mgo()]),
    )
    assert c.energy == pytest.approx(d.energy, abs=1e-9)


def test_a_generic_ase_calculator_by_factory_string(tmp_path):
    from ase.calculators.emt import EMT
    from pymatgen.io.ase import AseAtomsAdaptor

    spec = calculator_spec("emt", "ase.calculators.emt:EMT", {"asap_cutoff": False})
    assert spec.kind == "calculator" and spec.family == "ASE" and spec.option_values() == {"asap_cutoff": False}
    assert hash(spec) == hash(calculator_spec("emt", "ase.calculators.emt:EMT", {"asap_cutoff": False}))
    potential = load_potential(spec)
    assert isinstance(potential, AsePotential) and isinstance(potential.model, EMT)
    assert load_potential(spec) is potential and potential.n_parameters() is None
    assert potential_class("ASE") is AsePotential

    cu = Structure(Lattice.cubic(3.55), ["Cu"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    (p,) = potential.predict([cu])
    atoms = AseAtomsAdaptor().get_atoms(cu)
    atoms.calc = EMT()
    assert p.energy == pytest.approx(atoms.get_potential_energy() / 4, abs=1e-12)
    assert np.isnan(p.magmoms).all()
    relaxation = potential.relax(cu, fmax=0.01, steps=50)
    assert relaxation.energies[-1] < relaxation.energies[0] and relaxation.converged(0.01)
    assert len(relaxation) == relaxation.n_steps + 1

    with pytest.raises(InputError, match="module:callable"):
        calculator_spec("x", "ase.calculators.emt.EMT")
    with pytest.raises(NotFoundError, match="not found"):
        resolve_factory("ase.calculators.emt:NoSuchCalculator")
    with pytest.raises(NotFoundError, match="ASE family loads calculators"):
        load_potential(ModelSpec("emt", family="ASE"))


def test_a_calculator_weights_file_is_checked_before_the_factory_runs(tmp_path):
    weights = tmp_path / "checkpoint.pth"
    shutil.copyfile(SHIPPED_MODELS["sevennet-0"].weights_file(), weights)
    digest = sha256_file(weights)
    spec = calculator_spec(
        "7net-as-calculator", "sevenn.calculator:SevenNetCalculator", {"device": "cpu"}, path=weights, sha256=digest
    )
    with contextlib.redirect_stdout(io.StringIO()) as out:
        potential = load_potential(spec)
    assert out.getvalue() == "" and potential.n_parameters() > 800_000
    (a,), (b,) = potential.predict([_mgo()]), load_potential(_spec("sevennet-0")).predict([_mgo()])
    assert a.energy == pytest.approx(b.energy, abs=1e-9)
    with pytest.raises(IntegrityError, match="sha256"):
        load_potential(calculator_spec("tampered", spec.factory, {"device": "cpu"}, path=weights, sha256="0" * 64))
    with pytest.raises(IntegrityError, match="no sha256"):
        load_potential(calculator_spec("unchecked", spec.factory, {"device": "cpu"}, path=weights))


def test_worker_hooks():
    cls = potential_class("SevenNet")
    assert cls is SevenNetPotential and issubclass(cls, Potential)
    before = torch.get_num_threads()
    with cls.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    cls.filter_warnings()  # sevenn's accelerator warning is silenced, nothing raised

"""The interatomic-potential adapter on the real CHGNet models shipped with chgnet (no database)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crossfid.errors import IntegrityError, NotFoundError
from crossfid.hashing import sha256_file
from crossfid.potentials.base import ModelSpec, Potential, load_potential, potential_class
from crossfid.potentials.chgnet import SHIPPED_MODELS, ChgnetPotential


def _mgo(a: float = 4.21) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.mark.parametrize("name", sorted(SHIPPED_MODELS))
def test_both_shipped_models_load_once_and_predict_in_crossfid_units(name):
    potential = load_potential(name)
    assert isinstance(potential, Potential) and potential.family == "CHGNet" and potential.name == name
    assert load_potential(name) is potential  # cached per process
    assert load_potential(ModelSpec(name, path="/elsewhere", sha256="0" * 64)) is potential  # a package is its name
    assert potential.n_parameters() == 412_525

    compressed = _mgo(4.21 * 0.95).get_primitive_structure()
    (p,) = potential.predict([compressed])
    n = len(compressed)
    assert isinstance(p.energy, float) and np.isfinite(p.energy)
    assert p.forces.shape == (n, 3) and p.stress.shape == (3, 3) and p.magmoms.shape == (n,)
    assert np.trace(p.stress) < -30  # compressed: compressive, tens of GPa (not eV/Å³, which would be ~ -0.2)
    direct = potential.model.predict_structure(compressed, task="efsm")  # chgnet itself: eV/atom, GPa
    assert p.energy == float(direct["e"])
    assert np.array_equal(p.stress, np.asarray(direct["s"], dtype=float))


def test_models_differ_by_their_atomrefs():
    gga, r2scan = load_potential("chgnet-0.3.0"), load_potential("chgnet-r2scan")
    assert gga is not r2scan
    difference = r2scan.atomref() - gga.atomref()
    assert difference[25] == pytest.approx(-6.02, abs=0.05)  # Fe (CHGNET_NOTES.md)
    (e_gga,), (e_r2,) = gga.predict([_mgo()]), r2scan.predict([_mgo()])
    assert e_gga.energy != pytest.approx(e_r2.energy, abs=0.1)


def test_relax_si_a_few_steps():
    potential = load_potential("chgnet-0.3.0")
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43 * 1.03), ["Si"], [[0, 0, 0]]).get_primitive_structure()
    before = si.copy()
    relaxation = potential.relax(si, fmax=0.01, steps=5)
    k = len(relaxation)
    assert si == before  # the input is not modified
    assert 2 <= k <= 6 and relaxation.n_steps == 5  # initial + one per step; the repeated final one dropped
    assert relaxation.energies.shape == (k,) and relaxation.cells.shape == (k, 3, 3)
    assert relaxation.positions.shape == relaxation.forces.shape == (k, 2, 3)
    assert relaxation.stresses.shape == (k, 3, 3) and relaxation.magmoms.shape == (k, 2)
    assert np.trace(relaxation.stresses[0]) > 0  # stretched: tensile, GPa
    assert relaxation.energies[-1] < relaxation.energies[0]  # total eV
    assert abs(np.linalg.det(relaxation.cells[-1])) < abs(np.linalg.det(relaxation.cells[0]))
    final = relaxation.final_structure
    assert len(final.site_properties["magmom"]) == 2
    assert np.allclose(final.lattice.matrix, relaxation.cells[-1])
    assert not relaxation.converged(1e-9) and relaxation.optimised_forces.shape[1] == 3
    assert potential.model.graph_converter.on_isolated_atoms != "ignore"  # restored after the run


def test_atomref_round_trip_writes_into_a_copy_only():
    cached = load_potential("chgnet-0.3.0")
    original = cached.atomref()
    assert original.shape == (94,) and np.isfinite(original).all()
    copy = cached.copy()
    assert copy is not cached and copy.model is not cached.model
    values = load_potential("chgnet-r2scan").atomref() + 0.25
    copy.set_atomref(values)
    assert np.allclose(copy.atomref(), values, rtol=0, atol=1e-5)  # float32 weights
    assert np.array_equal(cached.atomref(), original)
    (shifted,), (base,) = copy.predict([_mgo()]), cached.predict([_mgo()])
    expected = 0.5 * (values[11] - original[11]) + 0.5 * (values[7] - original[7])  # Mg, O
    assert shifted.energy - base.energy == pytest.approx(expected, abs=1e-4)
    holes = values.copy()
    holes[0] = np.nan
    with pytest.raises(ValueError):
        copy.set_atomref(holes)
    with pytest.raises(ValueError):
        copy.set_atomref(values[:10])
    assert [p.numel() for p in copy.atomref_parameters()] == [94]


def test_registered_weights_are_loaded_only_with_their_sha256(tmp_path):
    path = tmp_path / "weights.pth.tar"
    shutil.copyfile(SHIPPED_MODELS["chgnet-0.3.0"].weights_file(), path)
    digest = sha256_file(path)
    spec = ModelSpec("run-1-best", kind="trained", path=str(path), sha256=digest)
    trained = load_potential(spec)
    assert load_potential(spec) is trained and trained.name == "run-1-best"
    assert np.array_equal(trained.atomref(), load_potential("chgnet-0.3.0").atomref())

    with pytest.raises(IntegrityError, match="sha256"):
        load_potential(ModelSpec("run-2-best", kind="trained", path=str(path), sha256="0" * 64))
    tampered = tmp_path / "tampered.pth.tar"
    tampered.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(IntegrityError):
        load_potential(ModelSpec("run-3-best", kind="trained", path=str(tampered), sha256=digest))
    with pytest.raises(NotFoundError, match="missing"):
        load_potential(ModelSpec("run-4-best", kind="trained", path=str(tmp_path / "gone.pt"), sha256=digest))
    with pytest.raises(NotFoundError):
        load_potential("chgnet-9.9")
    with pytest.raises(NotFoundError, match="family"):
        load_potential(ModelSpec("x", family="NoSuchFamily"))


def test_worker_hooks():
    cls = potential_class()
    assert cls is ChgnetPotential
    before = torch.get_num_threads()
    with cls.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before

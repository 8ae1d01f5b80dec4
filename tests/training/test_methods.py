"""The four transfer methods set up exactly the trainable parameters and AtomRef they should (real CHGNet)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossfid.potentials.base import load_potential
from crossfid.referencing.package_atomrefs import package_atomref_values
from crossfid.training.methods import METHODS, MethodError, set_up_model, trainable_parameter_names

ATOMREF = "composition_model.fc.weight"


@pytest.fixture(scope="module")
def base():
    return load_potential("chgnet-0.3.0")


@pytest.fixture(scope="module")
def target():
    values = package_atomref_values("chgnet-r2scan") + 0.01  # a stand-in target fit, different from both models
    return values


def _atomref(model) -> np.ndarray:
    return model.composition_model.fc.weight.detach().double().numpy().ravel()


def test_each_method_sets_its_atomref_and_trainable_parameters(base, target):
    source = _atomref(base.model).copy()
    all_names = [name for name, _ in base.model.named_parameters()]
    base_state = {k: v.clone() for k, v in base.model.state_dict().items()}
    models = {method: set_up_model(method, base, target, seed=0) for method in METHODS}

    for method in ("scratch", "tl-refit-atomref"):
        assert np.allclose(_atomref(models[method]), target, atol=1e-6)
    for method in ("tl-trainable-atomref", "tl-frozen-atomref"):
        assert np.array_equal(_atomref(models[method]), source)

    assert trainable_parameter_names(models["tl-trainable-atomref"]) == all_names
    for method in ("scratch", "tl-frozen-atomref", "tl-refit-atomref"):
        assert trainable_parameter_names(models[method]) == [n for n in all_names if n != ATOMREF]

    gnn = "atom_embedding.embedding.weight"
    base_gnn = base.model.state_dict()[gnn]
    for method in ("tl-trainable-atomref", "tl-frozen-atomref", "tl-refit-atomref"):
        assert torch.equal(models[method].state_dict()[gnn], base_gnn)  # transfer starts from the base weights
    assert not torch.equal(models["scratch"].state_dict()[gnn], base_gnn)  # scratch starts from random ones
    assert sum(p.numel() for p in models["scratch"].parameters()) == sum(p.numel() for p in base.model.parameters())

    for key, value in base.model.state_dict().items():  # the base model itself is untouched
        assert torch.equal(value, base_state[key]), key


def test_refit_method_changes_predictions_by_exactly_the_atomref_difference(base, target):
    from pymatgen.core import Lattice, Structure

    structure = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    refit = set_up_model("tl-refit-atomref", base, target)
    before = base.model.predict_structure(structure, task="e")["e"]
    after = refit.predict_structure(structure, task="e")["e"]
    shift = 0.5 * (target[11] - _atomref(base.model)[11]) + 0.5 * (target[7] - _atomref(base.model)[7])
    assert after - before == pytest.approx(shift, abs=1e-4)


def test_bad_requests_are_refused(base, target):
    with pytest.raises(MethodError, match="unknown method"):
        set_up_model("finetune", base, target)
    with pytest.raises(MethodError, match="needs the target AtomRef"):
        set_up_model("tl-refit-atomref", base)
    holes = target.copy()
    holes[[0, 25]] = np.nan
    with pytest.raises(MethodError, match="no value for H, Fe"):
        set_up_model("scratch", base, holes)

"""The CHGNet training loop: learning, frozen weights, gradient statistics, cosine LR, exact resume (real CHGNet).

Labels are the pretrained model's own predictions with every energy shifted by
+0.1 eV/atom, so an untrained model starts at exactly 100 meV/atom energy error
and ~0 force/stress/magmom error, and learning the shift is visible in 1-3 epochs.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from crossfid.potentials.base import load_potential
from crossfid.training import loop
from crossfid.training.hyperparameters import HyperparameterError, Hyperparameters
from crossfid.training.loop import GRADIENT_LAYERS, TrainingError, TrainState
from crossfid.training.methods import set_up_model

OFFSET = 0.1  # eV/atom added to the model's own energies
ATOMREF = "composition_model.fc.weight"
#: small cells (2-4 atoms): lattice, species, fractional coordinates
PROTOTYPES = [
    (Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.cubic(3.6), ["Li", "F"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.cubic(2.9), ["Ni", "Al"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.cubic(3.9), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
    (Lattice.cubic(3.2), ["Cu", "Au"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.hexagonal(3.25, 5.2), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.38]]),
    (Lattice.cubic(4.05), ["Al"] * 4, [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]),
    (Lattice.cubic(2.7), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.cubic(3.4), ["Ca", "F", "F"], [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]]),
    (Lattice.cubic(2.86), ["Co", "Ni"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
    (Lattice.cubic(3.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
]
SMALL = {"batch_size": 4, "gradient_samples": 2}  # 8 training structures: 2 optimiser steps per epoch


@pytest.fixture(scope="module")
def base():
    return load_potential("chgnet-0.3.0")


@pytest.fixture(scope="module")
def items(base):
    """12 (graph, labels) items: rattled small cells labelled by the base model, energies shifted by OFFSET."""
    rng = np.random.default_rng(7)
    structures = [Structure(lat, sp, np.array(fc) + rng.normal(0, 0.01, (len(sp), 3))) for lat, sp, fc in PROTOTYPES]
    graphs = [base.model.graph_converter(s) for s in structures]
    predictions = base.model.predict_graph(graphs, task="efsm", batch_size=16)
    return [
        (graph, {"e": torch.tensor(float(p["e"]) + OFFSET)} | {k: torch.tensor(p[k]) for k in "fsm"})
        for graph, p in zip(graphs, predictions, strict=True)
    ]


def _parameters(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _run(model, items, hp, *, val=True, **kw):
    """Train on items[:8] (val items[8:]); returns the final state, epoch results and gradient calls."""
    results, gradient_calls = [], []
    state = loop.train(
        model,
        items[:8],
        items[8:] if val else None,
        hp,
        on_epoch=lambda result, state: results.append((result, state.best_epoch, state.best_val_energy_mae)),
        on_gradients=gradient_calls.append,
        **kw,
    )
    for result, _, _ in results:
        print(f"epoch {result.epoch}: {result.seconds:.2f} s ({result.compute_seconds:.2f} s compute)")
    return state, results, gradient_calls


def test_hyperparameter_defaults_round_trip_and_validation():
    hp = Hyperparameters()
    assert (hp.epochs, hp.batch_size, hp.learning_rate, hp.final_learning_rate) == (50, 64, 1e-3, 1e-5)
    assert (hp.energy_weight, hp.force_weight, hp.stress_weight, hp.magmom_weight) == (3, 1, 0.1, 1)
    assert (hp.optimizer, hp.loss, hp.targets) == ("Adam", "Huber", "efsm")
    changed = hp.with_overrides(epochs=3, learning_rate=2e-3, targets="fe")
    assert changed.targets == "ef" and changed.epochs == 3 and hp.epochs == 50
    assert Hyperparameters.from_dict(changed.to_dict()) == changed
    assert Hyperparameters.from_dict({"epochs": 2}).epochs == 2
    assert isinstance(Hyperparameters(learning_rate=1).learning_rate, float)
    with pytest.raises(HyperparameterError, match="unknown hyperparameter.*lr"):
        Hyperparameters.from_dict({"lr": 1e-3})
    bad = {
        "epochs": 0,
        "batch_size": -1,
        "learning_rate": 0.0,
        "final_learning_rate": 1e-2,  # above the initial rate
        "targets": "fs",  # no energy
        "optimizer": "Adagrad",
        "loss": "L2",
        "seed": 1.5,
        "huber_delta": "0.1",
    }
    for key, value in bad.items():
        with pytest.raises(HyperparameterError, match=key):
            hp.with_overrides(**{key: value})
    for targets in ("eex", "eq", ""):
        with pytest.raises(HyperparameterError, match="targets"):
            hp.with_overrides(targets=targets)


def test_resolve_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loop.resolve_device("auto") == "cpu"
    assert loop.resolve_device("cpu") == "cpu"
    with pytest.raises(loop.DeviceError, match="no CUDA"):
        loop.resolve_device("cuda")
    with pytest.raises(loop.DeviceError, match="unknown device"):
        loop.resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert loop.resolve_device("auto") == "cuda"


def test_gradient_layers_are_weight_tensors_of_chgnet(base):
    parameters = dict(base.model.named_parameters())
    for label, name in GRADIENT_LAYERS.items():
        assert name in parameters, label
        assert name.endswith("weight") and parameters[name].dim() == 2, label


def test_gradient_sample_steps_are_evenly_spaced_and_end_at_the_last():
    assert loop.gradient_sample_steps(100, 10) == list(range(10, 101, 10))
    assert loop.gradient_sample_steps(25, 10) == [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]
    assert loop.gradient_sample_steps(3, 10) == [1, 2, 3]
    assert loop.gradient_sample_steps(5, 0) == []


def test_frozen_atomref_run_freezes_atomref_records_gradients_and_decays_lr(base, items):
    model = set_up_model("tl-frozen-atomref", base)
    before = _parameters(model)
    hp = Hyperparameters(epochs=2, **SMALL)
    state, results, gradient_calls = _run(model, items, hp)
    after = _parameters(model)

    assert torch.equal(after[ATOMREF], before[ATOMREF])  # bitwise
    for label, name in GRADIENT_LAYERS.items():
        if name != ATOMREF:
            assert not torch.equal(after[name], before[name]), label

    assert len(gradient_calls) == hp.gradient_samples  # epoch 1 only
    assert [call[0].step for call in gradient_calls] == [1, 2]
    for call in gradient_calls:
        assert {r.layer for r in call} == set(GRADIENT_LAYERS) - {"AtomRef"}  # the frozen one is skipped
        for r in call:
            assert r.epoch == 1 and r.fraction == r.step / 2 and r.parameter == GRADIENT_LAYERS[r.layer]
            assert 0 <= r.abs_min <= r.abs_mean <= r.abs_max and r.abs_max > 0

    assert [r.epoch for r, _, _ in results] == [1, 2] and state.epoch == 2
    first, last = results[0][0], results[-1][0]
    assert first.learning_rate == pytest.approx((hp.learning_rate + hp.final_learning_rate) / 2)  # half way
    assert last.learning_rate == pytest.approx(hp.final_learning_rate, rel=1e-9)
    assert state.scheduler.last_epoch == 4  # stepped once per batch
    val_errors = [r.val.energy_mae for r, _, _ in results]
    assert state.best_epoch == 1 + int(np.argmin(val_errors)) and state.best_val_energy_mae == min(val_errors)
    assert results[0][1] == 1  # on_epoch already sees the updated best
    for result, _, _ in results:
        assert (result.train.n_structures, result.val.n_structures) == (8, 4)
        assert None not in dataclasses.astuple(result.train) + dataclasses.astuple(result.val)
        assert min(result.compute_seconds, result.val_seconds, result.other_seconds) >= 0
        parts = result.compute_seconds + result.val_seconds + result.other_seconds
        assert parts == pytest.approx(result.seconds)


def test_trainable_atomref_learns_an_energy_offset_and_ef_skips_stress_and_magmoms(base, items):
    model = set_up_model("tl-trainable-atomref", base)
    hp = Hyperparameters(epochs=2, targets="ef", **SMALL)
    start = loop.evaluate(model, items[:8], None, hp)
    assert start.energy_mae == pytest.approx(1000 * OFFSET, rel=1e-4) and start.force_mae < 0.01
    atomref = _parameters(model)[ATOMREF]
    _, results, gradient_calls = _run(model, items, hp, val=False)
    end = loop.evaluate(model, items[:8], None, hp)

    assert end.energy_mae < 0.7 * start.energy_mae
    assert results[-1][0].train.loss < results[0][0].train.loss
    assert not torch.equal(_parameters(model)[ATOMREF], atomref)
    assert all("AtomRef" in {r.layer for r in call} for call in gradient_calls)
    for metrics in (start, end, results[-1][0].train):
        assert metrics.stress_mae is None and metrics.magmom_mae is None and metrics.force_mae is not None
    assert results[-1][0].val is None and results[-1][2] == results[-1][0].train.energy_mae  # best from train


def test_resume_after_interruption_reproduces_the_uninterrupted_run(base, items):
    method, hp = "tl-trainable-atomref", Hyperparameters(epochs=3, **SMALL)
    straight, straight_results, _ = _run(set_up_model(method, base), items, hp)

    model = set_up_model(method, base)
    stopped, first_results, _ = _run(model, items, hp, should_stop=lambda: True)
    assert stopped.epoch == 1
    stopped, first_results, _ = _run(model, items, hp, state=stopped, should_stop=lambda: stopped.epoch == 2)
    assert [r.epoch for r, _, _ in first_results] == [2]
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "train": stopped.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    torch.manual_seed(12345)  # whatever happened in between, the resumed run restores the RNGs
    np.random.seed(12345)
    resumed_model = set_up_model(method, base)
    resumed_model.load_state_dict(checkpoint["model"])
    state = TrainState.from_state_dict(resumed_model, hp, 8, checkpoint["train"])
    state, resumed_results, gradient_calls = _run(resumed_model, items, hp, state=state)

    assert gradient_calls == [] and [r.epoch for r, _, _ in resumed_results] == [3]
    expected, got = straight_results[-1][0], resumed_results[0][0]
    for part in ("train", "val"):
        for field, value in dataclasses.asdict(getattr(expected, part)).items():
            assert getattr(getattr(got, part), field) == pytest.approx(value, rel=1e-6, abs=1e-9), (part, field)
    assert got.learning_rate == pytest.approx(expected.learning_rate)
    assert (state.best_epoch, state.best_val_energy_mae) == (straight.best_epoch, straight.best_val_energy_mae)
    for name, value in _parameters(straight.model).items():
        torch.testing.assert_close(_parameters(resumed_model)[name], value, rtol=1e-5, atol=1e-7)


def test_mismatched_states_and_items_are_refused_and_evaluate_changes_nothing(base, items):
    hp = Hyperparameters(epochs=2, **SMALL)
    trainable = set_up_model("tl-trainable-atomref", base)
    saved = TrainState.create(trainable, hp, n_train=8).state_dict()
    frozen = set_up_model("tl-frozen-atomref", base)
    with pytest.raises(TrainingError, match="other trainable parameters.*composition_model"):
        TrainState.create(frozen, hp, n_train=8).load_state_dict(saved)
    with pytest.raises(TrainingError, match="made for 4 optimiser steps, this run has 6"):
        loop.train(trainable, items[:8], None, hp.with_overrides(epochs=3), state=TrainState.create(trainable, hp, 8))
    with pytest.raises(TrainingError, match="item 1 has no labels f, s, m"):
        loop.train(trainable, [items[0], (items[1][0], {"e": items[1][1]["e"]})] + items[2:8], None, hp)

    with pytest.raises(TypeError, match="hp must be Hyperparameters"):
        loop.evaluate(frozen, items[8:], "ef", "cpu")
    before = _parameters(frozen)
    frozen.train()
    metrics = loop.evaluate(frozen, items[8:], "efsm", hp)
    assert frozen.training and metrics.n_structures == 4 and metrics.magmom_mae is not None
    assert all(p.grad is None for p in frozen.parameters())
    for name, value in _parameters(frozen).items():
        assert torch.equal(value, before[name]), name


def test_batches_collate_in_a_reproducible_order(items):
    sizes = [len(graphs) for graphs, _ in loop.batches(items[:10], 4, shuffle=False)]
    assert sizes == [4, 4, 2]
    graphs, labels = next(loop.batches(items, 4, shuffle=False))
    assert graphs == [graph for graph, _ in items[:4]] and labels["e"].shape == (4,) and len(labels["f"]) == 4

    def order(seed: int) -> list[int]:
        rng = np.random.default_rng([seed, 2])
        ids = {id(graph): i for i, (graph, _) in enumerate(items)}
        return [ids[id(g)] for graphs, _ in loop.batches(items, 4, shuffle=True, rng=rng) for g in graphs]

    assert order(0) == order(0) != order(1) and sorted(order(0)) == list(range(len(items)))


def test_a_nan_energy_error_stops_training_after_reporting_the_epoch(base, items, monkeypatch):
    nan = loop.PartMetrics(float("nan"), None, None, None, float("nan"), 8)
    monkeypatch.setattr(loop, "_train_epoch", lambda *args: (nan, 0.0))
    reported = []
    model = set_up_model("tl-frozen-atomref", base)
    with pytest.raises(TrainingError, match="training energy error is NaN at epoch 1"):
        loop.train(model, items[:8], None, Hyperparameters(epochs=3, **SMALL), on_epoch=lambda r, s: reported.append(s))
    assert len(reported) == 1 and reported[0].epoch == 1 and reported[0].best_epoch is None

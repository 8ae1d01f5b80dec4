"""The MPtrj curation rules (CURATION_RULES.md) on hand-built frames, at and around every threshold."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crossfid.curation.config import DEFAULT_DEDUPE_TIERS, CurationConfig, DedupeTier
from crossfid.curation.decisions import (
    ACCEPTANCE_REASONS,
    COMPLETE_LABELS,
    DUPLICATE,
    ELECTRONIC_CONVERGENCE,
    ENERGY_UNIQUE,
    ENERGY_WINDOW,
    FINAL_FRAME_AGREEMENT,
    HUBBARD_CONSISTENCY,
    MIN_DISTANCE,
    NO_REFERENCE_ENTRY,
    REFERENCE_FRAME,
    REJECTION_RULES,
    STRUCTURE_UNIQUE,
    FrameView,
)
from crossfid.curation.rules import (
    ReferenceView,
    TaskView,
    complete_labels,
    curate_material,
    electronic_convergence,
    energy_window,
    final_frame_agreement,
    hubbard_consistency,
    min_distance,
    nelm_from_input_parameters,
    reference_frame,
    shortest_distance,
)

E_REF = -5.0  # exactly representable, and so are E_REF + 1.0, E_REF - 0.0 ...
CONFIG = CurationConfig()
METHODS = ["fast", "reference"]

#: rocksalt NaCl, conventional cell
_FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
NACL_FRAC = np.vstack([_FCC, (_FCC + [0.5, 0, 0]) % 1])
NACL_NUMBERS = [11] * 4 + [17] * 4


def frame(
    key,
    energy,
    *,
    step=0,
    forces=True,
    stress=True,
    has_energy=None,
    n_electronic_steps=None,
    scf_converged=None,
    scale=1.0,
):
    return FrameView(
        key=key,
        ionic_step=step,
        n_atoms=8,
        energy_per_atom=energy,
        has_energy=(energy is not None) if has_energy is None else has_energy,
        has_forces=forces,
        has_stress=stress,
        n_electronic_steps=n_electronic_steps,
        scf_converged=scf_converged,
        lattice=5.64 * scale * np.eye(3),
        atomic_numbers=NACL_NUMBERS,
        frac_coords=NACL_FRAC,
    )


def task(key, frames, *, hubbards=None, nelm=100):
    return TaskView(key=key, task_type="relax", hubbards=hubbards, nelm=nelm, frames=tuple(frames))


def by_key(decisions):
    return {d.frame_key: d for d in decisions}


# --------------------------------------------------------------------------- config


def test_config_defaults_and_serialisation_round_trip():
    config = CurationConfig()
    assert config.final_frame_threshold == 0.02
    assert (config.energy_window_lower, config.energy_window_upper) == (-0.01, 1.0)
    assert config.reference_frame_tolerance == 1e-5
    assert config.require_stress and config.hubbard_consistency
    assert config.dedupe_tiers == DEFAULT_DEDUPE_TIERS
    assert config.dedupe_tiers[0] == DedupeTier(0, 0.002, 0.001, 0.05, 0.002)
    assert config.dedupe_tiers[3] == DedupeTier(50, 0.3, 0.2, 3.0, 0.03)
    assert config.structure_matcher_options(config.dedupe_tiers[0]) == {
        "ltol": 0.002,
        "stol": 0.001,
        "angle_tol": 0.05,
        "primitive_cell": True,
        "scale": False,
        "attempt_supercell": False,
        "allow_subset": False,
    }
    data = config.to_dict()
    assert list(data) == sorted(data)
    text = json.dumps(data, sort_keys=True)
    assert CurationConfig.from_dict(json.loads(text)) == config
    assert CurationConfig.from_dict(json.loads(text)).config_hash() == config.config_hash()
    assert len(config.config_hash()) == 64
    assert CurationConfig(final_frame_threshold=0.03).config_hash() != config.config_hash()
    assert CurationConfig(energy_window_upper=1).config_hash() == config.config_hash()
    # tiers given as lists (e.g. from JSON) are normalised
    assert CurationConfig(dedupe_tiers=[list(t) for t in DEFAULT_DEDUPE_TIERS]) == config


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        CurationConfig(energy_window_lower=1.0, energy_window_upper=0.5)
    with pytest.raises(ValueError):
        CurationConfig(dedupe_tiers=((5, 0.1, 0.1, 1, 0.01),))
    with pytest.raises(ValueError):
        CurationConfig(dedupe_tiers=((0, 0.1, 0.1, 1, 0.01), (0, 0.2, 0.1, 1, 0.01)))
    with pytest.raises(ValueError):
        CurationConfig.from_dict({"no_such_threshold": 1})


@pytest.mark.parametrize(
    ("n_accepted", "tier"),
    [(0, 0), (1, 0), (10, 0), (11, 1), (30, 1), (31, 2), (50, 2), (51, 3), (500, 3)],
)
def test_tier_selection(n_accepted, tier):
    assert CONFIG.tier_index(n_accepted) == tier


# --------------------------------------------------------------------------- rule 1


def test_hubbard_consistency_u_on_off_mismatch():
    with_u = task("t-u", [frame(1, E_REF)], hubbards={"Fe": 5.3})
    without_u = task("t-gga", [frame(2, E_REF)], hubbards=None)
    out = hubbard_consistency([with_u, without_u], ReferenceView(E_REF, hubbards={}), CONFIG)
    assert [t.key for t in out.remaining] == ["t-gga"]
    (decision,) = out.decisions
    assert decision.frame_key == 1 and decision.rule == HUBBARD_CONSISTENCY and not decision.accepted
    assert decision.detail["task_uses_u"] and not decision.detail["reference_uses_u"]
    assert "+U" in decision.message

    out = hubbard_consistency([with_u, without_u], ReferenceView(E_REF, hubbards={"Fe": 5.3}), CONFIG)
    assert [t.key for t in out.remaining] == ["t-u"]
    assert [d.frame_key for d in out.decisions] == [2]


def test_hubbard_consistency_differing_values_and_elements():
    reference = ReferenceView(E_REF, hubbards={"Fe": 5.3, "O": 0.0})
    same = task("same", [frame(1, E_REF)], hubbards={"Fe": 5.3 + 1e-9})
    other_u = task("other", [frame(2, E_REF)], hubbards={"Fe": 4.0})
    extra = task("extra", [frame(3, E_REF)], hubbards={"Fe": 5.3, "Co": 3.32})
    out = hubbard_consistency([same, other_u, extra], reference, CONFIG)
    assert [t.key for t in out.remaining] == ["same"]
    decisions = by_key(out.decisions)
    assert decisions[2].detail["differing"] == {"Fe": [4.0, 5.3]}
    assert decisions[3].detail["differing"] == {"Co": [3.32, None]}
    assert "Fe: 4 vs 5.3 eV" in decisions[2].message


def test_hubbard_consistency_not_applied_when_unknown_or_disabled():
    t = task("t", [frame(1, E_REF)], hubbards={"Fe": 5.3})
    assert hubbard_consistency([t], ReferenceView(E_REF, hubbards=None), CONFIG).remaining == (t,)
    disabled = CurationConfig(hubbard_consistency=False)
    assert hubbard_consistency([t], ReferenceView(E_REF, hubbards={}), disabled).remaining == (t,)


# --------------------------------------------------------------------------- rule 2


@pytest.mark.parametrize(
    ("e_last", "kept"),
    [
        (E_REF + 0.02 - 1e-9, True),
        (E_REF + 0.02 + 1e-9, False),
        (E_REF - 0.02 + 1e-9, True),
        (E_REF - 0.02 - 1e-9, False),
        (E_REF, True),
    ],
)
def test_final_frame_agreement_threshold(e_last, kept):
    t = task("t", [frame(1, E_REF + 0.5, step=0), frame(2, e_last, step=1)])
    out = final_frame_agreement([t], ReferenceView(E_REF), CONFIG)
    assert (out.remaining == (t,)) is kept
    if not kept:
        assert [d.frame_key for d in out.decisions] == [1, 2]  # the whole task
        assert all(d.rule == FINAL_FRAME_AGREEMENT for d in out.decisions)
        detail = out.decisions[0].detail
        assert detail["last_frame"] == 2 and detail["threshold"] == 0.02
        assert math.isclose(abs(detail["delta_e"]), 0.02, abs_tol=2e-9)


def test_final_frame_agreement_is_strict_at_the_threshold():
    # E_ref = 0: delta is exactly 0.02, which is not < 0.02
    t = task("t", [frame(1, 0.02)])
    out = final_frame_agreement([t], ReferenceView(0.0), CONFIG)
    assert out.remaining == () and out.decisions[0].detail["delta_e"] == 0.02


def test_final_frame_agreement_uses_the_last_ionic_step_and_needs_its_energy():
    # frames given out of order: the last is ionic step 5
    t = task("t", [frame(2, E_REF + 0.3, step=5), frame(1, E_REF, step=0)])
    out = final_frame_agreement([t], ReferenceView(E_REF), CONFIG)
    assert out.remaining == () and out.decisions[0].detail["last_ionic_step"] == 5
    no_energy = task("t", [frame(1, E_REF, step=0), frame(2, None, step=1)])
    out = final_frame_agreement([no_energy], ReferenceView(E_REF), CONFIG)
    assert out.remaining == () and out.decisions[0].detail["e_last"] is None


def test_final_frame_agreement_never_compares_different_energy_quantities():
    """An e_fr_energy task against an e_0_energy entry is rejected even when the numbers agree; unknown compares."""
    from dataclasses import replace

    t = task("t", [frame(1, E_REF)])
    fr = replace(t, energy_quantity="e_fr_energy")
    zero = replace(t, energy_quantity="e_0_energy")
    reference = ReferenceView(E_REF, energy_quantity="e_0_energy")
    out = final_frame_agreement([fr, zero], reference, CONFIG)
    assert out.remaining == (zero,)
    (decision,) = out.decisions
    assert decision.rule == FINAL_FRAME_AGREEMENT and not decision.accepted
    assert "e_fr_energy" in decision.message and "e_0_energy" in decision.message
    assert decision.detail["task_energy"] == "e_fr_energy"
    unknown = replace(t, energy_quantity="unknown")
    assert final_frame_agreement([unknown], reference, CONFIG).remaining == (unknown,)
    assert final_frame_agreement([fr], ReferenceView(E_REF), CONFIG).remaining == (fr,)


# --------------------------------------------------------------------------- rule 3


def test_complete_labels():
    frames = [
        frame(1, E_REF),
        frame(2, None),
        frame(3, E_REF, forces=False),
        frame(4, E_REF, stress=False),
        frame(5, float("nan"), has_energy=True),
        frame(6, E_REF, forces=False, stress=False),
    ]
    out = complete_labels(frames, CONFIG)
    assert [f.key for f in out.remaining] == [1]
    decisions = by_key(out.decisions)
    assert decisions[2].detail["missing"] == ["energy"]
    assert decisions[3].detail["missing"] == ["forces"]
    assert decisions[4].detail["missing"] == ["stress"] and "training target" in decisions[4].message
    assert decisions[5].detail["missing"] == ["finite energy"]
    assert decisions[6].detail["missing"] == ["forces", "stress"]
    assert all(d.rule == COMPLETE_LABELS and not d.accepted for d in out.decisions)
    # stress only required when it is a training target
    out = complete_labels(frames, CurationConfig(require_stress=False))
    assert [f.key for f in out.remaining] == [1, 4]


def test_frame_view_from_arrays_flags_missing_and_non_finite_labels():
    f = FrameView.from_arrays(
        7, 3, 5.64 * np.eye(3).ravel(), NACL_NUMBERS, NACL_FRAC.ravel(), -3.0, forces=np.full((8, 3), np.nan)
    )
    assert f.n_atoms == 8 and f.lattice.shape == (3, 3) and f.frac_coords.shape == (8, 3)
    assert f.has_energy and not f.has_forces and not f.has_stress
    assert f.structure.composition.reduced_formula == "NaCl"
    assert f.structure is f.structure  # built once


# --------------------------------------------------------------------------- rule 4


def test_electronic_convergence():
    frames = [
        frame(1, E_REF, n_electronic_steps=99),
        frame(2, E_REF, n_electronic_steps=100),
        frame(3, E_REF, n_electronic_steps=101),
        frame(4, E_REF, n_electronic_steps=12, scf_converged=False),
        frame(5, E_REF, n_electronic_steps=None, scf_converged=True),
    ]
    out = electronic_convergence(frames, 100, CONFIG)
    assert [f.key for f in out.remaining] == [1, 5]
    decisions = by_key(out.decisions)
    assert decisions[2].rule == ELECTRONIC_CONVERGENCE
    assert decisions[2].detail == {"n_electronic_steps": 100, "nelm": 100, "scf_converged": None}
    assert "NELM = 100" in decisions[2].message
    assert "scf_converged" in decisions[4].message
    # NELM unknown: only scf_converged decides
    out = electronic_convergence(frames, None, CONFIG)
    assert [f.key for f in out.remaining] == [1, 2, 3, 5]


def test_nelm_from_input_parameters():
    assert nelm_from_input_parameters({"NELM": 100, "EDIFF": 1e-5}) == 100
    assert nelm_from_input_parameters({"nelm": "200"}) == 200
    assert nelm_from_input_parameters({"EDIFF": 1e-5}) is None
    assert nelm_from_input_parameters(None) is None


# --------------------------------------------------------------------------- rule 5


@pytest.mark.parametrize(
    ("delta", "kept"),
    [(-0.01, True), (-0.01 - 1e-9, False), (-0.01 + 1e-9, True), (1.0, True), (1.0 + 1e-9, False), (1.0 - 1e-9, True)],
)
def test_energy_window_bounds(delta, kept):
    # E_ref = 0: ΔE is the frame energy itself, so the comparison is exact
    out = energy_window([frame(1, delta)], ReferenceView(0.0), CONFIG)
    assert bool(out.remaining) is kept
    if not kept:
        (decision,) = out.decisions
        assert decision.rule == ENERGY_WINDOW
        assert decision.detail["delta_e"] == delta
        assert decision.detail["bound"] == ("upper" if delta > 0 else "lower")


def test_energy_window_message_names_the_numbers():
    out = energy_window([frame(1, E_REF + 1.37)], ReferenceView(E_REF), CONFIG)
    (decision,) = out.decisions
    assert decision.message.startswith("ΔE = 1.37 eV/atom > 1 eV/atom")
    assert decision.detail["threshold"] == 1.0
    out = energy_window([frame(1, E_REF - 1.0)], ReferenceView(E_REF), CONFIG)
    assert out.decisions[0].message.startswith("ΔE = -1 eV/atom < -0.01 eV/atom")


# --------------------------------------------------------------------------- rule 6


def test_reference_frame_tolerance():
    inside = frame(1, E_REF + 1e-5 - 1e-9)
    outside = frame(2, E_REF + 1e-5 + 1e-9)
    out = reference_frame([outside, inside], ReferenceView(E_REF), CONFIG)
    assert out.accepted == (inside,) and out.remaining == (outside,)
    (decision,) = out.decisions
    assert decision.accepted and decision.rule == REFERENCE_FRAME
    assert decision.detail["tolerance"] == 1e-5
    out = reference_frame([frame(3, E_REF - 1e-5 - 1e-9)], ReferenceView(E_REF), CONFIG)
    assert out.accepted == () and out.decisions == ()


@pytest.mark.parametrize("method", METHODS)
def test_reference_frame_is_accepted_once_and_first(method):
    # two frames at E_ref: the first in walking order (task order, then ionic step) is the reference frame
    t1 = task("t1", [frame(10, E_REF + 0.3, step=0), frame(11, E_REF, step=1)])
    t2 = task("t2", [frame(20, E_REF, step=0)])
    decisions = by_key(curate_material([t1, t2], ReferenceView(E_REF), CONFIG, dedupe=method))
    assert decisions[11].rule == REFERENCE_FRAME
    assert decisions[20].rule == DUPLICATE and decisions[20].detail["matched_frame"] == 11
    assert decisions[10].rule == ENERGY_UNIQUE


# --------------------------------------------------------------------------- the whole material


@pytest.mark.parametrize("method", METHODS)
def test_curate_material_applies_every_rule_in_order(method):
    tasks = [
        task(
            "relax",
            [
                frame(1, E_REF + 1.5, step=0),  # energy window
                frame(2, E_REF + 0.4, step=1, forces=False),  # labels
                frame(3, E_REF + 0.3, step=2, n_electronic_steps=100),  # NELM hit
                frame(4, E_REF + 0.2, step=3),  # energy-unique
                frame(5, E_REF + 0.2005, step=4),  # energy within 2 meV/atom of 4, same structure
                frame(6, E_REF + 0.2005, step=5, scale=1.05),  # energy close, other structure
                frame(7, E_REF - 0.02, step=6),  # below the window
                frame(8, E_REF + 0.005, step=7),  # last frame: agrees with E_ref, energy-unique
            ],
        ),
        task("bad-final", [frame(30, E_REF + 0.1, step=0), frame(31, E_REF + 0.05, step=1)]),
        task("static", [frame(40, E_REF)], hubbards={"Fe": 5.3}),
        task("static-2", [frame(50, E_REF)]),
    ]
    decisions = curate_material(tasks, ReferenceView(E_REF, hubbards={}), CONFIG, dedupe=method)
    assert [d.frame_key for d in decisions] == [1, 2, 3, 4, 5, 6, 7, 8, 30, 31, 40, 50]
    rules = {d.frame_key: d.rule for d in decisions}
    assert rules == {
        1: ENERGY_WINDOW,
        2: COMPLETE_LABELS,
        3: ELECTRONIC_CONVERGENCE,
        4: ENERGY_UNIQUE,
        5: DUPLICATE,
        6: STRUCTURE_UNIQUE,
        7: ENERGY_WINDOW,
        8: ENERGY_UNIQUE,
        30: FINAL_FRAME_AGREEMENT,
        31: FINAL_FRAME_AGREEMENT,
        40: HUBBARD_CONSISTENCY,
        50: REFERENCE_FRAME,
    }
    accepted = {d.frame_key for d in decisions if d.accepted}
    assert accepted == {4, 6, 8, 50}
    for d in decisions:
        assert d.rule in (ACCEPTANCE_REASONS if d.accepted else REJECTION_RULES)
        assert d.message
        json.dumps(d.as_dict())  # JSON-safe
    dup = by_key(decisions)[5]
    # energy close to frame 4, but compared with every accepted frame: the reference frame matches first
    assert dup.detail["nearest_accepted"] == 4 and dup.detail["matched_frame"] == 50 and dup.detail["tier"] == 0
    assert dup.detail["ltol"] == 0.002 and dup.detail["stol"] == 0.001 and dup.detail["angle_tol"] == 0.05
    assert dup.rule_number == 7 and by_key(decisions)[40].rule_number == 1


def test_curate_material_without_reference_rejects_everything():
    tasks = [task("a", [frame(1, E_REF), frame(2, E_REF + 0.1, step=1)]), task("b", [frame(3, E_REF)])]
    decisions = curate_material(tasks, None, CONFIG)
    assert [d.frame_key for d in decisions] == [1, 2, 3]
    assert {d.rule for d in decisions} == {NO_REFERENCE_ENTRY}
    assert not any(d.accepted for d in decisions)


def test_curate_material_rejects_duplicate_frame_keys():
    with pytest.raises(ValueError, match="unique"):
        curate_material([task("a", [frame(1, E_REF)]), task("b", [frame(1, E_REF)])], ReferenceView(E_REF), CONFIG)


# --------------------------------------------------------------------------- rule 7 tiers


def _material_with_accepted(n_accepted: int, candidate: FrameView, spacing: float = 0.012):
    """A reference frame plus n_accepted - 1 energy-unique frames (identical structure), then ``candidate``.

    The relaxation walks down in energy and ends 12 meV/atom above E_ref (rule 2 holds); the
    candidate's task ends on a frame at E_ref (so rule 2 holds for it too), a duplicate walked after it.
    """
    relax = task("relax", [frame(i, E_REF + spacing * i, step=n_accepted - i) for i in range(1, n_accepted)])
    closing = frame(1000, E_REF + 1e-4, step=1)
    return [relax, task("static", [frame(0, E_REF)]), task("extra", [candidate, closing])]


def _decide(n_accepted, candidate, method):
    tasks = _material_with_accepted(n_accepted, candidate)
    decisions = by_key(curate_material(tasks, ReferenceView(E_REF), CONFIG, dedupe=method))
    assert sum(d.accepted for key, d in decisions.items() if key != candidate.key) == n_accepted
    assert decisions[1000].rule == DUPLICATE
    return decisions[candidate.key]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("n_accepted", "delta_e"),
    [(10, 0.003), (30, 0.007), (50, 0.02)],  # between the energy thresholds of tier k and tier k + 1
)
def test_energy_threshold_switches_after_10_30_50_accepted_frames(method, n_accepted, delta_e):
    # identical structure to every accepted frame, energy delta_e above the highest one
    top = E_REF + 0.012 * (n_accepted - 1)
    before = _decide(n_accepted, frame(999, top + delta_e, step=0), method)
    assert before.rule == ENERGY_UNIQUE and before.accepted
    assert before.detail["n_accepted_before"] == n_accepted
    after = _decide(n_accepted + 1, frame(999, top + 0.012 + delta_e, step=0), method)
    assert after.rule == DUPLICATE and not after.accepted
    assert after.detail["n_accepted_before"] == n_accepted + 1
    assert after.detail["tier"] == before.detail["tier"] + 1
    assert after.detail["matched_frame"] == 0  # the reference frame comes first
    assert math.isclose(after.detail["min_abs_delta_e"], delta_e, abs_tol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_structure_tolerance_switches_after_10_accepted_frames(method):
    # lattice 0.5 % larger: beyond ltol 0.002 (tier 0), within ltol 0.01 (tier 1); energy 1 meV/atom from E_ref
    candidate = frame(999, E_REF + 0.001, scale=1.005)
    before = _decide(10, candidate, method)
    assert before.rule == STRUCTURE_UNIQUE and before.accepted and before.detail["tier"] == 0
    assert before.detail["n_compared"] == 10 and before.detail["nearest_accepted"] == 0
    after = _decide(11, frame(999, E_REF + 0.001, scale=1.005), method)
    assert after.rule == DUPLICATE and after.detail["tier"] == 1 and after.detail["ltol"] == 0.01
    assert "duplicate of accepted frame 0" in after.message


# --------------------------------------------------------------------------- safety rule: overlapping atoms

#: silicon, diamond structure, primitive fcc cell (a = 5.43 Å): nearest neighbours at a·√3/4 = 2.351 Å
SI_A = 5.43
SI_LATTICE = SI_A / 2 * np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
SI_FRAC = [[0, 0, 0], [0.25, 0.25, 0.25]]


def view(key, lattice, numbers, frac, energy=E_REF, step=0):
    return FrameView.from_arrays(
        key, step, lattice, numbers, frac, energy, forces=np.zeros((len(numbers), 3)), stress=np.zeros((3, 3))
    )


def test_config_has_the_min_distance_threshold_in_its_hash():
    config = CurationConfig()
    assert config.min_interatomic_distance == 0.5 and config.to_dict()["min_interatomic_distance"] == 0.5
    assert config.to_dict()["rules_version"] == 2
    assert CurationConfig(min_interatomic_distance=0.6).config_hash() != config.config_hash()
    assert CurationConfig(min_interatomic_distance=None).config_hash() != config.config_hash()
    assert CurationConfig(min_interatomic_distance=1).to_dict()["min_interatomic_distance"] == 1.0
    off = CurationConfig(min_interatomic_distance=None)
    assert CurationConfig.from_dict(json.loads(off.canonical_json())) == off
    for bad in (0, -0.5, math.nan, math.inf, True, "0.5"):
        with pytest.raises(ValueError, match="min_interatomic_distance"):
            CurationConfig(min_interatomic_distance=bad)
    # a configuration stored before the rule existed (rules version 1) had no such rule
    old = {k: v for k, v in config.to_dict().items() if k != "min_interatomic_distance"} | {"rules_version": 1}
    assert CurationConfig.from_dict(old).min_interatomic_distance is None
    with pytest.raises(ValueError, match="not a setting of rules version 1"):
        CurationConfig.from_dict({"rules_version": 1, "min_interatomic_distance": 0.5})
    with pytest.raises(ValueError, match="rules version 3"):
        CurationConfig.from_dict({"rules_version": 3})


def test_shortest_distance_finds_a_close_pair_and_its_image():
    lattice = 5.0 * np.eye(3)
    pair = shortest_distance(lattice, [[0.5, 0.5, 0.5], [0.52, 0.5, 0.5], [0, 0, 0]], 0.5)
    assert pair.i == 0 and pair.j == 1 and pair.image == (0, 0, 0) and pair.distance == pytest.approx(0.1, abs=1e-12)
    across = shortest_distance(lattice, [[0.99, 0.5, 0.5], [0.01, 0.5, 0.5]], 0.5)  # across the cell boundary
    assert across.distance == pytest.approx(0.1, abs=1e-12) and (across.i, across.j, across.image) == (0, 1, (1, 0, 0))
    assert shortest_distance(4.0 * np.eye(3), [[0.5, 0.5, 0.5], [0.625, 0.5, 0.5]], 0.5) is None  # 0.5 Å exactly
    assert shortest_distance(lattice, [[0.2, 0.2, 0.2], [0.2, 0.2, 0.2]], 0.5).distance == 0.0  # identical sites


def test_shortest_distance_of_normal_crystals_is_their_bond_length():
    si = shortest_distance(SI_LATTICE, SI_FRAC, 3.0)
    assert si.distance == pytest.approx(SI_A * math.sqrt(3) / 4, rel=1e-12)
    nacl = shortest_distance(5.64 * np.eye(3), NACL_FRAC, 3.0)
    assert nacl.distance == pytest.approx(2.82, rel=1e-12) and {NACL_NUMBERS[nacl.i], NACL_NUMBERS[nacl.j]} == {11, 17}
    assert (
        shortest_distance(SI_LATTICE, SI_FRAC, 0.5) is None
        and shortest_distance(5.64 * np.eye(3), NACL_FRAC, 0.5) is None
    )
    # one-atom cells: the nearest atom is the atom's own periodic image
    bcc_fe = 2.87 / 2 * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]])
    fe = shortest_distance(bcc_fe, [[0, 0, 0]], 3.0)
    assert fe.distance == pytest.approx(2.87 * math.sqrt(3) / 2, rel=1e-12) and fe.i == fe.j == 0
    assert shortest_distance(bcc_fe, [[0, 0, 0]], 0.5) is None


def test_shortest_distance_agrees_with_pymatgen_on_skewed_and_tiny_cells():
    from pymatgen.core import Lattice, Structure

    rng = np.random.default_rng(4)
    for trial in range(60):
        n = int(rng.integers(1, 6))
        lattice = np.diag(rng.uniform(0.3, 4, 3)) + np.triu(rng.normal(0, 2.5, (3, 3)), 1)
        frac = rng.uniform(-1, 2, (n, 3))
        cutoff = float(rng.uniform(0.5, 3))
        _, _, _, distances = Structure(Lattice(lattice), ["H"] * n, frac).get_neighbor_list(cutoff)
        expected = distances.min() if len(distances) and distances.min() < cutoff else None
        pair = shortest_distance(lattice, frac, cutoff)
        if expected is None:
            assert pair is None, trial
            continue
        assert pair.distance == pytest.approx(expected, abs=1e-9), trial
        vector = (frac[pair.j] + pair.image - frac[pair.i]) @ lattice  # the reported image is the stored one
        assert np.linalg.norm(vector) == pytest.approx(pair.distance, abs=1e-9), trial


def test_min_distance_rule_rejects_overlapping_atoms_with_the_measured_distance():
    frames = [
        view(1, 5.0 * np.eye(3), [8, 1], [[0.5, 0.5, 0.5], [0.52, 0.5, 0.5]]),  # a 0.1 Å O-H pair
        view(2, SI_LATTICE, [14, 14], SI_FRAC),  # silicon
        view(3, 5.64 * np.eye(3), NACL_NUMBERS, NACL_FRAC),  # rock salt
        view(4, 0.4 * np.eye(3), [1], [[0, 0, 0]]),  # one H atom in a 0.4 Å cube: it overlaps its images
        view(5, 2.87 / 2 * np.array([[-1, 1, 1], [1, -1, 1], [1, 1, -1]]), [26], [[0, 0, 0]]),  # bcc Fe
    ]
    outcome = min_distance(frames, CONFIG)
    assert [f.key for f in outcome.remaining] == [2, 3, 5]
    pair, tiny = outcome.decisions
    assert pair.frame_key == 1 and not pair.accepted and pair.rule == MIN_DISTANCE and pair.rule_number is None
    assert pair.detail["min_distance"] == pytest.approx(0.1, abs=1e-12) and pair.detail["threshold"] == 0.5
    assert pair.detail["sites"] == [0, 1] and pair.detail["atomic_numbers"] == [8, 1]
    assert "atoms 0 and 1 are 0.1 Å apart (< 0.5 Å)" in pair.message
    assert tiny.frame_key == 4 and tiny.detail["min_distance"] == pytest.approx(0.4) and tiny.detail["sites"] == [0, 0]
    assert "its own periodic image" in tiny.message
    json.dumps([d.as_dict() for d in outcome.decisions])  # JSON-safe
    assert min_distance(frames, CurationConfig(min_interatomic_distance=None)).remaining == tuple(frames)
    stricter = min_distance(frames, CurationConfig(min_interatomic_distance=2.4))
    assert [f.key for f in stricter.remaining] == [3, 5]  # Si-Si 2.35 Å is now too close


@pytest.mark.parametrize("method", METHODS)
def test_curate_material_applies_min_distance_after_the_mptrj_frame_rules(method):
    overlap = np.vstack([NACL_FRAC[:7], NACL_FRAC[0] + [0.01, 0, 0]])  # the last Cl sits 0.056 Å from a Na
    frames = [
        view(1, 5.64 * np.eye(3), NACL_NUMBERS, overlap, energy=E_REF, step=0),  # would be the reference frame
        view(2, 5.64 * np.eye(3), NACL_NUMBERS, overlap, energy=E_REF + 2, step=1),  # also outside the window
        view(3, 5.64 * np.eye(3), NACL_NUMBERS, NACL_FRAC, energy=E_REF + 0.1, step=2),
        view(4, 5.64 * np.eye(3), NACL_NUMBERS, NACL_FRAC, energy=E_REF, step=3),
    ]
    decisions = by_key(curate_material([task("relax", frames)], ReferenceView(E_REF), CONFIG, dedupe=method))
    assert decisions[1].rule == MIN_DISTANCE and decisions[1].detail["min_distance"] == pytest.approx(0.0564)
    assert decisions[2].rule == ENERGY_WINDOW  # MPtrj's rules decide first: their decisions do not change
    assert decisions[4].rule == REFERENCE_FRAME and decisions[3].accepted
    assert MIN_DISTANCE in REJECTION_RULES
    off = CurationConfig(min_interatomic_distance=None)
    assert by_key(curate_material([task("relax", frames)], ReferenceView(E_REF), off, dedupe=method))[1].accepted

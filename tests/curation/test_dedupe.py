"""Rule 7: the fast deduplication gives exactly the decisions of the plain procedure, with fewer fit calls."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from crossfid.curation.config import CurationConfig
from crossfid.curation.decisions import DUPLICATE, ENERGY_UNIQUE, STRUCTURE_UNIQUE, FrameView
from crossfid.curation.dedupe import DedupeStats, FastPredicate, dedupe_fast, dedupe_reference

CONFIG = CurationConfig()

_FCC = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
_PEROVSKITE = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
_HEX = np.array([[3.0, 0, 0], [-1.5, 2.598, 0], [0, 0, 5.0]])


def _supercell(lattice, numbers, frac, repeat):
    shifts = np.array([[i, j, k] for i in range(repeat[0]) for j in range(repeat[1]) for k in range(repeat[2])])
    frac = ((frac[None, :, :] + shifts[:, None, :]) / np.asarray(repeat)).reshape(-1, 3)
    return np.asarray(lattice) * np.asarray(repeat)[:, None], list(numbers) * len(shifts), frac


#: (name, lattice, atomic numbers, fractional coordinates): high-symmetry cells and supercells that
#: reduce to smaller primitive cells (CHGNET_NOTES pitfall 8), and low-symmetry cells that do not
PROTOTYPES = {
    "Si-conventional": (5.47 * np.eye(3), [14] * 8, np.vstack([_FCC, _FCC + 0.25])),
    "NaCl-conventional": (5.69 * np.eye(3), [11] * 4 + [17] * 4, np.vstack([_FCC, (_FCC + [0.5, 0, 0]) % 1])),
    "SrTiO3-2x1x1": _supercell(3.905 * np.eye(3), [38, 22, 8, 8, 8], _PEROVSKITE, (2, 1, 1)),
    "Fe-bcc-2x2x2": _supercell(2.87 * np.eye(3), [26, 26], np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), (2, 2, 2)),
    "Fe2O3-like": (
        _HEX,
        [26] * 4 + [8] * 6,
        np.array(
            [
                [0, 0, 0.355],
                [0, 0, 0.645],
                [1 / 3, 2 / 3, 0.145],
                [2 / 3, 1 / 3, 0.855],
                [0.306, 0, 0.25],
                [0, 0.306, 0.25],
                [0.694, 0.694, 0.25],
                [0.694, 0, 0.75],
                [0, 0.694, 0.75],
                [0.306, 0.306, 0.75],
            ]
        ),
    ),
    "triclinic": (
        np.array([[4.1, 0.2, 0.1], [0.3, 5.2, 0.2], [0.5, 0.4, 6.3]]),
        [26, 26, 8, 8, 8, 8],
        np.array(
            [[0.1, 0.2, 0.3], [0.6, 0.7, 0.8], [0.3, 0.9, 0.1], [0.8, 0.4, 0.6], [0.5, 0.1, 0.5], [0.0, 0.6, 0.9]]
        ),
    ),
}


def _frame(key, lattice, numbers, frac, energy, step=0) -> FrameView:
    n = len(numbers)
    return FrameView.from_arrays(
        key, step, lattice, numbers, np.asarray(frac) % 1, energy, forces=np.zeros((n, 3)), stress=np.zeros((3, 3))
    )


def _perturbed(rng, lattice, frac, *, strain=0.0, rattle=0.0):
    lattice = np.asarray(lattice) @ (np.eye(3) + rng.normal(0, strain, (3, 3)))
    frac = np.asarray(frac) + rng.normal(0, rattle, (len(frac), 3)) @ np.linalg.inv(lattice)
    return lattice, frac % 1


def random_material(seed: int, key0: int = 0) -> list[FrameView]:
    """Frames of one material: a relaxation-like trajectory, then near-duplicates at tier-0/1 tolerance borders."""
    rng = np.random.default_rng(seed)
    name = list(PROTOTYPES)[seed % len(PROTOTYPES)]
    lattice0, numbers, frac0 = PROTOTYPES[name]
    n = len(numbers)
    e_ref = -4.0 - rng.random()
    start_lattice, start_frac = _perturbed(rng, lattice0, frac0, strain=0.02, rattle=0.05 * rng.random())
    frames = []
    key = key0
    steps = int(rng.integers(15, 25))
    for step in range(steps):
        r = np.exp(-4 * step / steps)
        lattice = lattice0 + (start_lattice - lattice0) * r
        frac = frac0 + ((start_frac - frac0 + 0.5) % 1 - 0.5) * r
        lattice, frac = _perturbed(rng, lattice, frac, rattle=0.003 * r)
        frames.append(_frame(key, lattice, numbers, frac, e_ref + 0.05 * r + 1e-4 * rng.random(), step))
        key += 1
    volume_per_atom = abs(np.linalg.det(lattice0)) / n
    for tier in CONFIG.dedupe_tiers[:2]:
        d = tier.stol * volume_per_atom ** (1 / 3)
        for factor in (0.5, 0.9, 1.1, 2.0):
            base = frames[int(rng.integers(len(frames)))]
            if rng.random() < 0.5:  # lattice near ltol
                lattice = base.lattice * (1 + tier.ltol * factor * rng.choice([-1, 1]))
                frac = base.frac_coords
            else:  # one atom moved near stol
                lattice = base.lattice
                shift = np.zeros((n, 3))
                shift[int(rng.integers(n))] = rng.normal(size=3)
                shift *= factor * d / np.linalg.norm(shift)
                frac = base.frac_coords + shift @ np.linalg.inv(lattice)
            energy = base.energy_per_atom + rng.uniform(-1, 1) * tier.energy_threshold * 0.5
            frames.append(_frame(key, lattice, numbers, frac, energy, len(frames)))
            key += 1
    return frames


def run_both(frames, accepted, config=CONFIG):
    stats_ref, stats_fast = DedupeStats(), DedupeStats()
    ref = dedupe_reference(frames, accepted, config, stats=stats_ref)
    fast = dedupe_fast(frames, accepted, config, stats=stats_fast)
    return ref, fast, stats_ref, stats_fast


def assert_identical(ref, fast, stats_ref, stats_fast):
    assert fast.decisions == ref.decisions
    assert [f.key for f in fast.accepted] == [f.key for f in ref.accepted]
    assert stats_ref.skipped == 0
    # the walk asks the same questions; fast answers some without fit
    assert stats_fast.fit_calls + stats_fast.skipped == stats_ref.fit_calls
    assert stats_fast.fit_calls <= stats_ref.fit_calls


# --------------------------------------------------------------------------- the building blocks


def _pairs(seed: int, count: int):
    """Pairs of frames of one prototype, the second perturbed around the tolerances of a random tier."""
    rng = np.random.default_rng(seed)
    names = list(PROTOTYPES)
    for i in range(count):
        lattice0, numbers, frac0 = PROTOTYPES[names[i % len(names)]]
        tier = CONFIG.dedupe_tiers[int(rng.integers(len(CONFIG.dedupe_tiers)))]
        n = len(numbers)
        d = tier.stol * (abs(np.linalg.det(lattice0)) / n) ** (1 / 3)
        lattice_a, frac_a = _perturbed(
            rng, lattice0, frac0, strain=0.01 * rng.random(), rattle=rng.choice([0, 0.01, 0.2])
        )
        scale = rng.choice([0.3, 0.7, 1.0, 1.5, 3.0])
        lattice_b, frac_b = _perturbed(
            rng, lattice_a, frac_a, strain=tier.ltol * scale * rng.random() / 2, rattle=d * scale
        )
        yield _frame(2 * i, lattice_a, numbers, frac_a, -1.0), _frame(2 * i + 1, lattice_b, numbers, frac_b, -1.0), tier


def test_fit_on_precomputed_reductions_behaves_like_fit():
    """dedupe_fast's step 1: fit(R1, R2, skip_structure_reduction=True) == fit(s1, s2)."""
    predicate = FastPredicate(CONFIG, DedupeStats())
    results = Counter()
    for a, b, tier in _pairs(seed=1, count=48):
        options = CONFIG.structure_matcher_options(tier)
        plain = StructureMatcher(**options).fit(a.structure, b.structure)
        ra = predicate.features(a, reduced=True).reduced
        rb = predicate.features(b, reduced=True).reduced
        skipped = StructureMatcher(**options).fit(ra, rb, skip_structure_reduction=True)
        assert bool(plain) == bool(skipped)
        assert ra.composition.fractional_composition == a.structure.composition.fractional_composition
        results[bool(plain)] += 1
    assert results[True] and results[False]  # both outcomes exercised


def test_necessary_conditions_never_exclude_a_match():
    predicate = FastPredicate(CONFIG, DedupeStats())
    reasons = Counter()
    for a, b, tier in _pairs(seed=2, count=150):
        reason = predicate.excluded_by(a, b, tier)
        match = bool(StructureMatcher(**CONFIG.structure_matcher_options(tier)).fit(a.structure, b.structure))
        assert not (match and reason), f"{reason} excluded a match ({a.key}, {b.key}, tier {tier})"
        reasons[reason if not match else "match"] += 1
    # every kind of condition was exercised
    assert {"site_count", "lattice_lengths", "lattice_mapping", "positions", "match"} <= set(reasons), reasons


def test_composition_condition():
    lattice, numbers, frac = PROTOTYPES["NaCl-conventional"]
    a = _frame(1, lattice, numbers, frac, -1.0)
    b = _frame(2, lattice, [11] * 3 + [17] * 5, frac, -1.0)
    assert FastPredicate(CONFIG, DedupeStats()).excluded_by(a, b, CONFIG.dedupe_tiers[0]) == "composition"


# --------------------------------------------------------------------------- identical decisions


@pytest.mark.parametrize("seed", range(6))
def test_fast_and_reference_decide_identically(seed):
    frames = random_material(seed, key0=1000 * seed)
    ref, fast, stats_ref, stats_fast = run_both(frames[1:], frames[:1])
    assert_identical(ref, fast, stats_ref, stats_fast)
    kinds = Counter(d.rule for d in ref.decisions)
    assert kinds[DUPLICATE] and kinds[ENERGY_UNIQUE]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6, 30))
def test_fast_and_reference_decide_identically_many(seed):
    frames = random_material(seed, key0=1000 * seed)
    assert_identical(*run_both(frames[1:], frames[:1]))


def test_tier_switching_with_many_accepted_frames_is_identical():
    """60 energy-distinct frames push the walk through all four tiers; near-duplicates follow."""
    rng = np.random.default_rng(7)
    lattice0, numbers, frac0 = PROTOTYPES["triclinic"]
    frames = []
    for i in range(60):
        lattice, frac = _perturbed(rng, lattice0, frac0, strain=0.004, rattle=0.02)
        frames.append(_frame(i, lattice, numbers, frac, -3.0 + 0.0125 * i, i))
    for i in range(40):
        base = frames[int(rng.integers(60))]
        strain = (0.003, 0.03, 0.15)[i % 3]
        lattice, frac = _perturbed(rng, base.lattice, base.frac_coords, strain=strain, rattle=0.03)
        frames.append(_frame(100 + i, lattice, numbers, frac, base.energy_per_atom + rng.uniform(-0.02, 0.02), i))
    ref, fast, stats_ref, stats_fast = run_both(frames, ())
    assert_identical(ref, fast, stats_ref, stats_fast)
    tiers = Counter(d.detail["tier"] for d in ref.decisions)
    assert set(tiers) == {0, 1, 2, 3}
    assert {DUPLICATE, STRUCTURE_UNIQUE, ENERGY_UNIQUE} <= {d.rule for d in ref.decisions}


def test_high_symmetry_supercells_reduce_before_matching():
    """Pitfall 8: rattled 16-atom bcc cells reduce to one atom, so they match at the strict tier-0 tolerances."""
    rng = np.random.default_rng(3)
    lattice0, numbers, frac0 = PROTOTYPES["Fe-bcc-2x2x2"]
    frames = []
    for i in range(4):
        lattice, frac = _perturbed(rng, lattice0, frac0, rattle=0.02)
        frames.append(_frame(i, lattice, numbers, frac, -8.0 + 1e-4 * i, i))
    assert len(StructureMatcher._get_reduced_structure(Structure.from_sites(frames[1].structure), True, True)) == 1
    ref, fast, stats_ref, stats_fast = run_both(frames[1:], frames[:1])
    assert_identical(ref, fast, stats_ref, stats_fast)
    assert [d.rule for d in ref.decisions] == [DUPLICATE] * 3
    # without the primitive reduction the 0.02 Å rattles are far beyond stol (≈ 0.002 Å)
    no_primitive = CurationConfig(primitive_cell=False)
    ref, fast, stats_ref, stats_fast = run_both(frames[1:], frames[:1], no_primitive)
    assert_identical(ref, fast, stats_ref, stats_fast)
    assert [d.rule for d in ref.decisions] == [STRUCTURE_UNIQUE] * 3


def test_energy_unique_frames_need_no_structure_matcher():
    lattice, numbers, frac = PROTOTYPES["Si-conventional"]
    frames = [_frame(i, lattice, numbers, frac, -5.0 + 0.05 * i, i) for i in range(8)]
    ref, fast, stats_ref, stats_fast = run_both(frames, ())
    assert_identical(ref, fast, stats_ref, stats_fast)
    assert {d.rule for d in fast.decisions} == {ENERGY_UNIQUE}
    assert stats_ref.fit_calls == stats_fast.fit_calls == stats_fast.skipped == 0
    assert stats_fast.energy_unique == 8 and stats_fast.candidates == 8
    assert fast.decisions[0].message == "no frame accepted yet: energy-unique"


def test_other_matcher_options_only_reuse_reductions():
    frames = random_material(4)
    config = CurationConfig(scale=True, attempt_supercell=True)
    ref, fast, stats_ref, stats_fast = run_both(frames[1:], frames[:1], config)
    assert fast.decisions == ref.decisions
    assert stats_fast.skipped == 0 and stats_fast.fit_calls == stats_ref.fit_calls


def test_dedupe_needs_finite_energies():
    lattice, numbers, frac = PROTOTYPES["Si-conventional"]
    with pytest.raises(ValueError, match="rule 3"):
        dedupe_fast([_frame(1, lattice, numbers, frac, None)], ())


def test_stats_accumulate():
    total = DedupeStats()
    for seed in (0, 1):
        frames = random_material(seed, key0=1000 * seed)
        stats = DedupeStats()
        dedupe_fast(frames[1:], frames[:1], CONFIG, stats=stats)
        total.add(stats)
    data = total.as_dict()
    assert data["candidates"] == total.candidates > 0
    assert total.pairs == total.fit_calls + total.skipped
    assert sum(total.skipped_by.values()) == total.skipped


# --------------------------------------------------------------------------- relaxation trajectories


def relaxation_set(seed: int, n_materials: int) -> list[list[FrameView]]:
    """Relaxation-like materials: two tasks per material whose frames relax lattice and positions smoothly."""
    rng = np.random.default_rng(seed)
    materials = []
    names = ["Si-conventional", "NaCl-conventional", "SrTiO3-2x1x1", "Fe2O3-like", "triclinic"]
    for m in range(n_materials):
        lattice0, numbers, frac0 = PROTOTYPES[names[m % len(names)]]
        e_ref = -5.0 - rng.random()
        frames = [_frame(100 * m, lattice0, numbers, frac0, e_ref)]  # the reference frame
        key = 100 * m + 1
        for _ in range(2):
            start_lattice, start_frac = _perturbed(rng, lattice0, frac0, strain=0.02, rattle=0.06)
            steps = 25
            for step in range(steps):
                r = np.exp(-3.5 * step / steps)
                lattice = lattice0 + (start_lattice - lattice0) * r
                frac = frac0 + ((start_frac - frac0 + 0.5) % 1 - 0.5) * r
                frames.append(_frame(key, lattice, numbers, frac, e_ref + 0.15 * r**2 + 2e-4 * r, step))
                key += 1
        materials.append(frames)
    return materials


def test_relaxation_trajectories_identical_with_fewer_fit_calls():
    total_ref, total_fast = DedupeStats(), DedupeStats()
    for frames in relaxation_set(seed=0, n_materials=3):
        ref, fast, stats_ref, stats_fast = run_both(frames[1:], frames[:1])
        assert_identical(ref, fast, stats_ref, stats_fast)
        total_ref.add(stats_ref)
        total_fast.add(stats_fast)
    ratio = total_ref.fit_calls / max(total_fast.fit_calls, 1)
    print(f"fit calls: reference {total_ref.fit_calls}, fast {total_fast.fit_calls} ({ratio:.1f}x fewer)")
    assert total_fast.fit_calls < total_ref.fit_calls


@pytest.mark.slow
def test_emt_relaxations_need_five_times_fewer_fit_calls():
    """Real relaxations (ASE EMT, FIRE + cell filter; see perf/dedupe.py): >= 5x fewer fit calls, same decisions."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("perf_dedupe", Path(__file__).parents[2] / "perf" / "dedupe.py")
    perf = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = perf  # dataclasses look their module up
    try:
        spec.loader.exec_module(perf)
    finally:
        del sys.modules[spec.name]
    from crossfid.curation.rules import curate_material

    materials = perf.build_emt_set(n_materials=4, n_frames=30, seed=1)
    stats_ref, stats_fast = DedupeStats(), DedupeStats()
    for tasks, reference in materials:
        ref = curate_material(tasks, reference, CONFIG, dedupe="reference", stats=stats_ref)
        fast = curate_material(tasks, reference, CONFIG, dedupe="fast", stats=stats_fast)
        assert fast == ref
    ratio = stats_ref.fit_calls / max(stats_fast.fit_calls, 1)
    print(f"EMT set: fit calls reference {stats_ref.fit_calls}, fast {stats_fast.fit_calls} ({ratio:.1f}x fewer)")
    assert ratio >= 5

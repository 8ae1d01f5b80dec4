"""Rule 7, deduplication within a material, two ways with identical decisions.

The walk (:func:`walk`) is shared: frames are taken in the order given; the tier is
chosen from the number of frames accepted so far (the reference frame of rule 6
included); a frame whose energy per atom differs from *every* accepted frame by more
than the tier's energy threshold is accepted (``energy_unique``) without any
StructureMatcher call; otherwise it is compared with *all* accepted frames, in the
order they were accepted, and rejected (``duplicate``) at the first one
``StructureMatcher(...).fit(candidate, accepted)`` matches, accepted
(``structure_unique``) when none does. Only that "does the candidate match accepted
frame X" predicate differs:

:func:`dedupe_reference`
    the plain procedure: a fresh ``StructureMatcher`` per call and
    ``fit(candidate.structure, accepted.structure)``.

:func:`dedupe_fast`
    the same predicate, computed with less work:

    1. each frame's reduced structure is computed once, with the function ``fit`` itself
       uses (``StructureMatcher._get_reduced_structure(Structure.from_sites(s),
       primitive_cell, niggli=True)``), and ``fit(R1, R2, skip_structure_reduction=True)``
       is called on those. ``fit`` then runs exactly the same code on exactly the same
       reduced structures: with ``skip_structure_reduction`` ``_preprocess`` only copies
       its inputs instead of reducing them, and the species hash it compares first is
       the fractional composition, which a primitive reduction preserves (tested).
    2. pairs that cheap *necessary* conditions prove not to match are not given to
       ``fit`` at all (counted in :class:`DedupeStats` as skipped). Derived from pymatgen
       2024-2026 ``StructureMatcher.fit`` with ``scale=False``, ``attempt_supercell=False``,
       ``allow_subset=False`` (for other options only step 1 is used). With R1, R2 the
       reduced candidate and accepted structure (``fit(s1, s2)`` → ``_match`` →
       ``_strict_match(R1, R2)`` since ``len(R1) >= len(R2)`` when the site counts are equal):

       * **composition**: ``fit`` returns False unless ``SpeciesComparator.get_hash``
         (the fractional composition, equal within 1e-8) agrees. Two frames with
         different reduced integer compositions have fractions that differ by at least
         1/(n1·n2); the condition is used only when n1·n2 < 1e7, i.e. the difference is
         > 1e-7, ten times pymatgen's tolerance.
       * **site count after reduction**: ``_strict_match`` returns None when the species
         mask is not square, i.e. ``len(R1) != len(R2)`` (no subset matching).
       * **volume**: every lattice ``fit`` tries is ``(u, v, w) = scale_m · R1.lattice`` from
         ``Lattice.find_all_mappings(R2.lattice, ltol, angle_tol)``, kept by ``_get_lattices``
         only when ``|det scale_m|`` is within 0.5 of 1, i.e. (integer matrix) exactly 1, so
         ``|det(u, v, w)| = V1``. ``find_all_mappings`` requires ``1/(1+ltol) < |u|/a2 < 1+ltol``
         (same for v/b2, w/c2) and each angle within ``angle_tol`` of R2's. With
         ``D = det`` of the cosine matrix ``[[1, cos γ, cos β], [cos γ, 1, cos α], [cos β, cos α, 1]]``
         (``V² = (abc)² D``) and ``|∂D/∂cos| <= 4`` on ``[-1, 1]³``, a change of each angle
         by at most δ (radians; ``|Δcos| <= |Δθ|``) changes D by at most ``12 δ``. Hence a
         match needs::

             (a2 b2 c2)² (D2 - 12δ) / (1+ltol)⁶  <=  V1²  <=  (a2 b2 c2)² (D2 + 12δ) (1+ltol)⁶

         checked with a relative safety margin of 1e-6 (δ enlarged by the same factor).
       * **lattice lengths / angles**: for an integer combination k of the mapped basis
         (the 13 vectors of {-1, 0, 1}³ up to sign: u, v, w, u±v, u±w, v±w, u±v±w),
         ``k·(u, v, w)`` is a non-zero lattice vector of R1 with
         ``|k·(u, v, w)|² = Σ_ij k_i k_j |u_i||u_j| cos θ_ij``; interval arithmetic over
         ``|u_i| ∈ (l_i/(1+ltol), l_i (1+ltol))`` (l = R2's lengths) and ``θ_ij`` within δ of
         R2's angles bounds it. All lattice vectors of R1 up to three times its longest
         cell edge are enumerated once per frame; the pair is skipped when none has a
         length in a bound (widened by the margin); bounds beyond the enumerated radius
         are not used. k = u, v, w is "lattice_lengths", the others "lattice_angles".
       * **lattice mapping**: the same enumeration replays ``find_all_mappings`` +
         ``_get_lattices``: candidate vectors per target length (interval widened by the
         margin), pairwise angles within ``angle_tol·(1+1e-6) + 1e-7`` degrees, unit
         integer determinant. This yields a superset of the bases ``fit`` tries; when it is
         empty, ``fit`` has no lattice to try and returns False. (Left to ``fit`` when the
         enumeration is too short or the combinations too many.)
       * **positions**: for each basis of that superset, ``fit`` puts both structures on
         ``avg_l`` (the mean of the two lattices' parameters) and matches only when, after
         one common translation, every R2 site has its (species-preserving) partner in R1
         within ``d = stol (V_avg / n)^(1/3)`` (``_cart_dists``; a masked or out-of-tolerance
         pair gets a 1e20 vector, which can never be part of a match since the translation
         anchor pair is at distance 0). Every pair-image vector then changes by less than
         2d, so, per unordered species pair, the k-th smallest pair-image distances of the
         two structures on ``avg_l`` differ by less than 2d. Each structure's own distances
         (computed once per frame, exhaustively up to 2·(V/n)^(1/3)) relate to its ``avg_l``
         distances by the exact metric distortion ``s_lo <= |x|_avg / |x|_own <= s_hi``
         (square roots of the extreme generalised eigenvalues of the two Gram matrices).
         The pair is skipped when, for *every* basis, some k has
         ``P1[k] s1_lo - P2[k] s2_hi >= 2d`` or ``P2[k] s2_lo - P1[k] s1_hi >= 2d`` (all
         factors widened by the margin).

       When a condition fails, the ``fit`` call is known to return False; the walk then
       moves on to the next accepted frame exactly as the reference does, so the first
       matching frame (reported in the decision) is the same.

One caveat applies to both ways alike: pymatgen caches reduced structures in an LRU
cache keyed by structure *equality* (coordinates within 1e-5 Å), so two frames that
equal each other to 1e-5 Å share a reduced structure, whichever was reduced first.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import numpy as np

from crossfid.curation.config import CurationConfig, DedupeTier
from crossfid.curation.decisions import (
    DUPLICATE,
    ENERGY_UNIQUE,
    STRUCTURE_UNIQUE,
    Decision,
    FrameView,
    RuleOutcome,
    fmt,
)

#: relative safety margin of the necessary conditions
MARGIN = 1e-6
#: the lattice-vector enumeration reaches this multiple of a frame's longest reduced cell edge
SHELL_RADIUS_FACTOR = 3.0
#: pair distances are listed up to this multiple of (V / n)^(1/3) of the reduced cell
PAIR_CUTOFF_FACTOR = 2.0
#: the basis enumeration is left to fit when it would combine more candidate vectors than this
MAX_BASIS_TRIPLES = 200_000
#: the positional check is left to fit when more candidate bases than this remain
MAX_BASES = 5_000
#: the composition condition is used only when n1 * n2 is below this (fractions then differ by > 1e-7)
MAX_COMPOSITION_PRODUCT = 10_000_000

#: "does the candidate match this accepted frame under this tier" (the only part that differs)
Predicate = Callable[[FrameView, FrameView, DedupeTier], bool]


@dataclass
class DedupeStats:
    """Work done by rule 7 (accumulates over calls; pass one object to several materials).

    ``skipped_by`` keys: composition, site_count, volume, lattice_lengths, lattice_angles,
    lattice_mapping, positions (the necessary conditions of the module doc).
    """

    candidates: int = 0  # frames walked by rule 7
    energy_unique: int = 0  # accepted by the energy pre-check, no structure comparison
    fit_calls: int = 0  # StructureMatcher.fit calls
    fit_seconds: float = 0.0  # time inside those calls
    skipped: int = 0  # pair comparisons decided by a necessary condition, without fit
    skipped_by: dict[str, int] = field(default_factory=dict)  # condition → count
    precompute_seconds: float = 0.0  # structures, reductions and lattice enumerations (fast)
    seconds: float = 0.0  # wall time of the whole rule

    @property
    def pairs(self) -> int:
        """Structure comparisons the rule asked for (fit calls + skipped ones)."""
        return self.fit_calls + self.skipped

    def add(self, other: DedupeStats) -> None:
        self.candidates += other.candidates
        self.energy_unique += other.energy_unique
        self.fit_calls += other.fit_calls
        self.fit_seconds += other.fit_seconds
        self.skipped += other.skipped
        for key, value in other.skipped_by.items():
            self.skipped_by[key] = self.skipped_by.get(key, 0) + value
        self.precompute_seconds += other.precompute_seconds
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "energy_unique": self.energy_unique,
            "fit_calls": self.fit_calls,
            "fit_seconds": self.fit_seconds,
            "skipped": self.skipped,
            "skipped_by": dict(sorted(self.skipped_by.items())),
            "precompute_seconds": self.precompute_seconds,
            "seconds": self.seconds,
        }


# --------------------------------------------------------------------------- the shared walk


def walk(
    frames: Sequence[FrameView],
    accepted: Sequence[FrameView],
    config: CurationConfig,
    matches: Predicate,
    stats: DedupeStats,
) -> RuleOutcome:
    """Rule 7's walk (module doc); ``matches`` is the structure predicate. Frames need finite energies."""
    accepted_frames = list(accepted)
    accepted_energies = [frame.energy_per_atom for frame in accepted_frames]
    newly: list[FrameView] = []
    decisions: list[Decision] = []
    for frame in frames:
        stats.candidates += 1
        n = len(accepted_frames)
        index = config.tier_index(n)
        tier = config.dedupe_tiers[index]
        threshold = tier.energy_threshold
        energy = frame.energy_per_atom
        detail: dict[str, Any] = {
            "tier": index,
            "n_accepted_before": n,
            "energy_threshold": threshold,
            "nearest_accepted": None,
            "min_abs_delta_e": None,
        }
        if n:
            diffs = [abs(energy - e) for e in accepted_energies]
            nearest = min(range(n), key=diffs.__getitem__)
            detail.update(nearest_accepted=accepted_frames[nearest].key, min_abs_delta_e=diffs[nearest])
        if not n or detail["min_abs_delta_e"] > threshold:
            stats.energy_unique += 1
            if n:
                message = (
                    f"|ΔE| to the nearest accepted frame = {fmt(detail['min_abs_delta_e'])} eV/atom "
                    f"> {fmt(threshold)} eV/atom (tier {index})"
                )
            else:
                message = "no frame accepted yet: energy-unique"
            decisions.append(Decision(frame.key, True, ENERGY_UNIQUE, detail, message))
        else:
            detail.update(ltol=tier.ltol, stol=tier.stol, angle_tol=tier.angle_tol)
            tolerances = f"ltol={fmt(tier.ltol)}, stol={fmt(tier.stol)}, angle_tol={fmt(tier.angle_tol)}°"
            for other in accepted_frames:
                if matches(frame, other, tier):
                    detail.update(matched_frame=other.key, delta_e_matched=energy - other.energy_per_atom)
                    message = (
                        f"duplicate of accepted frame {other.key!r}: StructureMatcher({tolerances}) matches and "
                        f"|ΔE| = {fmt(detail['min_abs_delta_e'])} eV/atom <= {fmt(threshold)} eV/atom "
                        f"to accepted frame {detail['nearest_accepted']!r} (tier {index})"
                    )
                    decisions.append(Decision(frame.key, False, DUPLICATE, detail, message))
                    break
            else:
                detail.update(n_compared=n)
                message = (
                    f"|ΔE| = {fmt(detail['min_abs_delta_e'])} eV/atom <= {fmt(threshold)} eV/atom but no "
                    f"StructureMatcher({tolerances}) match among {n} accepted frames (tier {index})"
                )
                decisions.append(Decision(frame.key, True, STRUCTURE_UNIQUE, detail, message))
        if decisions[-1].accepted:
            accepted_frames.append(frame)
            accepted_energies.append(energy)
            newly.append(frame)
    return RuleOutcome(remaining=(), accepted=tuple(newly), decisions=tuple(decisions))


def _check_energies(frames: Sequence[FrameView], accepted: Sequence[FrameView]) -> None:
    for frame in (*accepted, *frames):
        if not frame.energy_ok:
            raise ValueError(f"frame {frame.key!r} has no finite energy: rule 3 must run before rule 7")


# --------------------------------------------------------------------------- the plain procedure


def dedupe_reference(
    frames: Sequence[FrameView],
    accepted: Sequence[FrameView] = (),
    config: CurationConfig | None = None,
    *,
    stats: DedupeStats | None = None,
) -> RuleOutcome:
    """Rule 7 as specified: a fresh ``StructureMatcher`` and a ``fit`` for every comparison."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    config = config or CurationConfig()
    stats = stats if stats is not None else DedupeStats()
    _check_energies(frames, accepted)
    start = time.perf_counter()

    def matches(candidate: FrameView, other: FrameView, tier: DedupeTier) -> bool:
        matcher = StructureMatcher(**config.structure_matcher_options(tier))
        t0 = time.perf_counter()
        result = bool(matcher.fit(candidate.structure, other.structure))
        stats.fit_seconds += time.perf_counter() - t0
        stats.fit_calls += 1
        return result

    outcome = walk(frames, accepted, config, matches, stats)
    stats.seconds += time.perf_counter() - start
    return outcome


# --------------------------------------------------------------------------- the fast predicate


@dataclass
class _Features:
    """Per-frame quantities the fast predicate reuses (computed once, lazily)."""

    composition: tuple[tuple[int, int], ...]  # (Z, count / gcd of counts), sorted
    n_atoms: int
    reduced: Any = None  # pymatgen Structure, as fit would reduce it
    n_sites: int = 0
    matrix: np.ndarray | None = None  # reduced lattice, rows = vectors
    lengths: np.ndarray | None = None  # as pymatgen's Lattice.lengths
    angles: np.ndarray | None = None  # degrees (α, β, γ), as pymatgen's Lattice.angles
    gram: np.ndarray | None = None
    volume_sq: float = 0.0
    abc_sq: float = 0.0  # (a b c)²
    cos_det: float = 0.0  # D = V² / (a b c)²
    shell: list[float] = field(default_factory=list)  # sorted lengths of lattice vectors up to shell_radius
    shell_array: np.ndarray | None = None  # the same, as an array
    shell_cart: np.ndarray | None = None  # (N, 3) those vectors, Cartesian
    shell_int: np.ndarray | None = None  # (N, 3) their integer coordinates
    shell_radius: float = 0.0
    pair_distances: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)  # species pair → sorted
    targets: dict[DedupeTier, _Targets] = field(default_factory=dict)


@dataclass(frozen=True)
class _Targets:
    """Necessary bounds on the candidate's reduced lattice for a match with one accepted frame at one tier."""

    volume_sq: tuple[float, float]
    vector_lengths: tuple[tuple[str, float, float], ...]  # (condition, low, high): some lattice vector in [low, high]


#: integer combinations k of the mapped basis (u, v, w) whose lengths are bounded (one of ±k each)
_COMBINATIONS: tuple[tuple[int, int, int], ...] = (
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 0),
    (1, -1, 0),
    (1, 0, 1),
    (1, 0, -1),
    (0, 1, 1),
    (0, 1, -1),
    (1, 1, 1),
    (1, 1, -1),
    (1, -1, 1),
    (-1, 1, 1),
)


def _product_interval(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    products = (a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1])
    return min(products), max(products)


def _lattice_targets(feats: _Features, tier: DedupeTier) -> _Targets:
    """Bounds "volume" and "lattice lengths / angles" of the module doc, for target lattice ``feats``."""
    growth = 1 + tier.ltol
    delta = math.radians(tier.angle_tol) * (1 + MARGIN)
    lengths = feats.lengths
    # volume: V² = (|u||v||w|)² D with |ΔD| <= 12 δ
    upper = feats.abc_sq * (feats.cos_det + 12 * delta) * growth**6 * (1 + MARGIN)
    lower = feats.abc_sq * (feats.cos_det - 12 * delta) / growth**6 * (1 - MARGIN)
    # cos of the angle between basis vectors i and j (α between b, c; β between a, c; γ between a, b)
    angle_of = {(1, 2): feats.angles[0], (0, 2): feats.angles[1], (0, 1): feats.angles[2]}
    cos_bounds = {
        pair: (math.cos(min(math.radians(theta) + delta, math.pi)), math.cos(max(math.radians(theta) - delta, 0.0)))
        for pair, theta in angle_of.items()
    }
    vector_lengths = []
    for k in _COMBINATIONS:
        low_sq = high_sq = 0.0
        for i in range(3):
            if k[i]:
                low_sq += k[i] ** 2 * (lengths[i] / growth) ** 2
                high_sq += k[i] ** 2 * (lengths[i] * growth) ** 2
        for (i, j), cos_bound in cos_bounds.items():
            if k[i] and k[j]:
                product = (lengths[i] * lengths[j] / growth**2, lengths[i] * lengths[j] * growth**2)
                term_low, term_high = _product_interval(product, cos_bound)
                sign = k[i] * k[j]
                low_sq += 2 * sign * (term_low if sign > 0 else term_high)
                high_sq += 2 * sign * (term_high if sign > 0 else term_low)
        low = math.sqrt(max(low_sq, 0.0)) * (1 - MARGIN)
        high = math.sqrt(max(high_sq, 0.0)) * (1 + MARGIN)
        kind = "lattice_lengths" if sum(map(abs, k)) == 1 else "lattice_angles"
        vector_lengths.append((kind, low, high))
    return _Targets((lower, upper), tuple(vector_lengths))


def _composition_key(atomic_numbers: np.ndarray) -> tuple[tuple[int, int], ...]:
    numbers, counts = np.unique(atomic_numbers, return_counts=True)
    divisor = reduce(math.gcd, (int(c) for c in counts))
    return tuple((int(z), int(c) // divisor) for z, c in zip(numbers, counts, strict=True))


def _image_ranges(matrix: np.ndarray, radius: float, extra: float = 0.0) -> np.ndarray:
    """Integer vectors n covering every ``(f + n) @ matrix`` with length <= radius, for |f_i| <= extra."""
    # (f + n)_i = p · inverse[:, i], so |f_i + n_i| <= |p| |inverse[:, i]|
    bounds = np.ceil(radius * np.linalg.norm(np.linalg.inv(matrix), axis=0) + extra).astype(int)
    ranges = [np.arange(-b, b + 1) for b in bounds]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)


def _lattice_points(matrix: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All non-zero lattice vectors ``n @ matrix`` with length <= radius: (lengths, Cartesian, n), by length."""
    grid = _image_ranges(matrix, radius)
    cart = grid @ matrix
    lengths = np.linalg.norm(cart, axis=1)
    keep = (lengths > 0) & (lengths <= radius)
    order = np.argsort(lengths[keep], kind="stable")
    return lengths[keep][order], cart[keep][order], grid[keep][order]


def _pair_distance_lists(
    matrix: np.ndarray, frac: np.ndarray, numbers: np.ndarray, cutoff: float
) -> dict[tuple[int, int], np.ndarray]:
    """Per unordered species pair, the sorted distances of all (i, j, image) pairs up to ``cutoff`` (exhaustive).

    Ordered pairs are all included (i, j and j, i), the zero vector of a site to itself is not.
    """
    n = len(frac)
    images = _image_ranges(matrix, cutoff, extra=0.5)
    zero = np.all(images == 0, axis=1)
    lists: dict[tuple[int, int], list[np.ndarray]] = {}
    for i in range(n):  # one site at a time: memory n × images, not n² × images
        diffs = frac - frac[i]
        diffs -= np.round(diffs)  # |diff| <= 1/2
        distances = np.linalg.norm((diffs[:, None, :] + images[None, :, :]) @ matrix, axis=-1)
        for j in range(n):
            keep = distances[j] <= cutoff
            if i == j:
                keep &= ~zero
            key = (min(numbers[i], numbers[j]), max(numbers[i], numbers[j]))
            lists.setdefault(key, []).append(distances[j][keep])
    return {key: np.sort(np.concatenate(parts)) for key, parts in lists.items()}


def _gram_from_parameters(params: np.ndarray) -> np.ndarray:
    """Gram matrices (k, 3, 3) of lattices given as (k, 6) parameters (a, b, c, α, β, γ in degrees)."""
    a, b, c = params[:, 0], params[:, 1], params[:, 2]
    ca, cb, cg = (np.cos(np.radians(params[:, i])) for i in (3, 4, 5))
    gram = np.empty((len(params), 3, 3))
    gram[:, 0, 0], gram[:, 1, 1], gram[:, 2, 2] = a * a, b * b, c * c
    gram[:, 0, 1] = gram[:, 1, 0] = a * b * cg
    gram[:, 0, 2] = gram[:, 2, 0] = a * c * cb
    gram[:, 1, 2] = gram[:, 2, 1] = b * c * ca
    return gram


def _parameters_from_gram(gram: np.ndarray) -> np.ndarray:
    lengths = np.sqrt(np.einsum("kii->ki", gram))

    def angle(i: int, j: int) -> np.ndarray:
        return np.degrees(np.arccos(np.clip(gram[:, i, j] / (lengths[:, i] * lengths[:, j]), -1, 1)))

    return np.column_stack([lengths, angle(1, 2), angle(0, 2), angle(0, 1)])


def _distortion(gram_from: np.ndarray, gram_to: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of |x|_to / |x|_from over all x, per lattice pair: sqrt of the generalised eigenvalues."""
    chol = np.linalg.cholesky(gram_from)
    inv = np.linalg.inv(chol)
    eig = np.linalg.eigvalsh(inv @ gram_to @ np.swapaxes(inv, -1, -2))
    return np.sqrt(np.clip(eig[:, 0], 0, None)), np.sqrt(eig[:, -1])


class FastPredicate:
    """``fit`` on precomputed reductions, behind the necessary conditions of the module doc."""

    def __init__(self, config: CurationConfig, stats: DedupeStats) -> None:
        self.config = config
        self.stats = stats
        self.prefilter = not (config.scale or config.attempt_supercell or config.allow_subset)
        self._features: dict[int, tuple[FrameView, _Features]] = {}
        self._matchers: dict[DedupeTier, Any] = {}

    # -- per-frame work, once
    def features(self, frame: FrameView, *, reduced: bool) -> _Features:
        entry = self._features.get(id(frame))
        if entry is None:
            entry = (frame, _Features(_composition_key(frame.atomic_numbers), frame.n_atoms))
            self._features[id(frame)] = entry  # the frame is kept alive with its features: ids stay unique
        feats = entry[1]
        if reduced and feats.reduced is None:
            self._reduce(frame, feats)
        return feats

    def _reduce(self, frame: FrameView, feats: _Features) -> None:
        from pymatgen.analysis.structure_matcher import StructureMatcher
        from pymatgen.core import Structure

        t0 = time.perf_counter()
        # exactly what fit does: _process_species copies with Structure.from_sites, _preprocess reduces
        structure = Structure.from_sites(frame.structure)
        reduced = StructureMatcher._get_reduced_structure(structure, self.config.primitive_cell, True)
        feats.reduced = reduced
        feats.n_sites = len(reduced)
        if self.prefilter:
            lattice = reduced.lattice
            matrix = np.array(lattice.matrix, dtype=float)
            feats.matrix = matrix
            feats.lengths = np.array(lattice.lengths, dtype=float)
            feats.angles = np.array(lattice.angles, dtype=float)
            feats.gram = matrix @ matrix.T
            volume = abs(float(np.linalg.det(matrix)))
            feats.volume_sq = volume * volume
            feats.abc_sq = float(np.prod(feats.lengths)) ** 2
            feats.cos_det = feats.volume_sq / feats.abc_sq
            feats.shell_radius = SHELL_RADIUS_FACTOR * float(feats.lengths.max())
            shell_lengths, feats.shell_cart, feats.shell_int = _lattice_points(matrix, feats.shell_radius)
            feats.shell_array = shell_lengths
            feats.shell = shell_lengths.tolist()
            cutoff = PAIR_CUTOFF_FACTOR * (volume / feats.n_sites) ** (1 / 3)
            numbers = np.array([site.specie.Z for site in reduced], dtype=int)
            feats.pair_distances = _pair_distance_lists(matrix, np.array(reduced.frac_coords), numbers, cutoff)
        self.stats.precompute_seconds += time.perf_counter() - t0

    def _matcher(self, tier: DedupeTier) -> Any:
        matcher = self._matchers.get(tier)
        if matcher is None:
            from pymatgen.analysis.structure_matcher import StructureMatcher

            matcher = self._matchers[tier] = StructureMatcher(**self.config.structure_matcher_options(tier))
        return matcher

    def _skip(self, reason: str) -> bool:
        self.stats.skipped += 1
        self.stats.skipped_by[reason] = self.stats.skipped_by.get(reason, 0) + 1
        return False

    # -- the necessary conditions
    def _targets(self, feats: _Features, tier: DedupeTier) -> _Targets:
        targets = feats.targets.get(tier)
        if targets is None:
            targets = feats.targets[tier] = _lattice_targets(feats, tier)
        return targets

    def excluded_by(self, candidate: FrameView, other: FrameView, tier: DedupeTier) -> str | None:
        """The name of a necessary condition that ``fit(candidate, other)`` fails, or None (see module doc)."""
        c = self.features(candidate, reduced=False)
        o = self.features(other, reduced=False)
        if c.composition != o.composition and c.n_atoms * o.n_atoms < MAX_COMPOSITION_PRODUCT:
            return "composition"
        c = self.features(candidate, reduced=True)
        o = self.features(other, reduced=True)
        if c.n_sites != o.n_sites:
            return "site_count"
        targets = self._targets(o, tier)
        if not targets.volume_sq[0] <= c.volume_sq <= targets.volume_sq[1]:
            return "volume"
        shell = c.shell
        for kind, low, high in targets.vector_lengths:
            if high > c.shell_radius:
                continue  # beyond the enumeration: undecided
            i = bisect_left(shell, low)
            if i == len(shell) or shell[i] > high:
                return kind
        bases = self._candidate_bases(c, o, tier)
        if bases is None:
            return None
        if len(bases) == 0:
            return "lattice_mapping"
        if self._positions_exclude(c, o, bases, tier):
            return "positions"
        return None

    @staticmethod
    def _candidate_bases(c: _Features, o: _Features, tier: DedupeTier) -> np.ndarray | None:
        """A superset of the bases (u, v, w) of the candidate's lattice ``fit`` tries, (k, 3, 3) Cartesian rows.

        Mirrors ``Lattice.find_all_mappings(o.lattice, ltol, angle_tol)`` + ``_get_lattices``' unit
        determinant with lengths and angles widened by MARGIN; None when undecided (enumeration too
        short or too many combinations).
        """
        ltol = tier.ltol
        if float(o.lengths.max()) * (1 + ltol) * (1 + MARGIN) > c.shell_radius:
            return None
        slices = []
        for length in o.lengths:
            low = np.searchsorted(c.shell_array, length / (1 + ltol) * (1 - MARGIN), side="left")
            high = np.searchsorted(c.shell_array, length * (1 + ltol) * (1 + MARGIN), side="right")
            if high <= low:
                return np.empty((0, 3, 3))
            slices.append(slice(low, high))
        sizes = [s.stop - s.start for s in slices]
        if sizes[0] * sizes[1] * sizes[2] > MAX_BASIS_TRIPLES:
            return None
        vecs = [c.shell_cart[s] for s in slices]
        lens = [c.shell_array[s] for s in slices]
        tolerance = tier.angle_tol * (1 + MARGIN) + 1e-7

        def close(i: int, j: int, target: float) -> np.ndarray:
            cos = (vecs[i] @ vecs[j].T) / lens[i][:, None] / lens[j][None, :]
            return np.abs(np.degrees(np.arccos(np.clip(cos, -1, 1))) - target) <= tolerance

        alpha, beta, gamma = o.angles
        ok = close(0, 1, gamma)[:, :, None] & close(0, 2, beta)[:, None, :] & close(1, 2, alpha)[None, :, :]
        index = np.argwhere(ok)
        if len(index) == 0:
            return np.empty((0, 3, 3))
        ints = np.stack([c.shell_int[slices[axis]][index[:, axis]] for axis in range(3)], axis=1)
        unimodular = np.abs(np.rint(np.linalg.det(ints.astype(float)))) == 1
        if unimodular.sum() > MAX_BASES:
            return None
        return np.stack([vecs[axis][index[unimodular, axis]] for axis in range(3)], axis=1)

    @staticmethod
    def _positions_exclude(c: _Features, o: _Features, bases: np.ndarray, tier: DedupeTier) -> bool:
        """True when, for every candidate basis, the pair-distance order statistics rule out a match.

        For a basis (u, v, w), ``fit`` places both structures on ``avg_l`` (mean lattice parameters)
        and matches when every site moves by less than ``d = stol (V_avg / n)^(1/3)`` after one
        common translation. Then every pair-image vector changes by < 2d, so the k-th smallest
        pair distance (per species pair) of the two structures on ``avg_l`` differ by < 2d; each
        structure's own distances relate to its ``avg_l`` distances by the exact metric distortion
        bounds ``s_lo <= |x|_avg / |x|_own <= s_hi`` (generalised eigenvalues of the Gram matrices).
        """
        gram_latt = bases @ np.swapaxes(bases, -1, -2)
        params = (_parameters_from_gram(gram_latt) + np.concatenate([o.lengths, o.angles])[None, :]) / 2
        gram_avg = _gram_from_parameters(params)
        volume_avg = np.sqrt(np.clip(np.linalg.det(gram_avg), 0, None))
        reach = 2 * tier.stol * (volume_avg / c.n_sites) ** (1 / 3) * (1 + MARGIN)
        c_low, c_high = _distortion(gram_latt, gram_avg)
        o_low, o_high = _distortion(np.broadcast_to(o.gram, gram_avg.shape), gram_avg)
        c_low, o_low = c_low * (1 - MARGIN), o_low * (1 - MARGIN)
        c_high, o_high = c_high * (1 + MARGIN), o_high * (1 + MARGIN)
        excluded = np.zeros(len(bases), dtype=bool)
        for key, mine in c.pair_distances.items():
            theirs = o.pair_distances.get(key)
            if theirs is None:
                continue
            m = min(len(mine), len(theirs))
            if m == 0:
                continue
            p1, p2 = mine[None, :m], theirs[None, :m]
            too_far = (p1 * c_low[:, None] - p2 * o_high[:, None] >= reach[:, None]) | (
                p2 * o_low[:, None] - p1 * c_high[:, None] >= reach[:, None]
            )
            excluded |= too_far.any(axis=1)
            if excluded.all():
                return True
        return bool(excluded.all())

    def __call__(self, candidate: FrameView, other: FrameView, tier: DedupeTier) -> bool:
        if self.prefilter:
            reason = self.excluded_by(candidate, other, tier)
            if reason is not None:
                return self._skip(reason)
        c = self.features(candidate, reduced=True)
        o = self.features(other, reduced=True)
        matcher = self._matcher(tier)
        t0 = time.perf_counter()
        result = bool(matcher.fit(c.reduced, o.reduced, skip_structure_reduction=True))
        self.stats.fit_seconds += time.perf_counter() - t0
        self.stats.fit_calls += 1
        return result


def dedupe_fast(
    frames: Sequence[FrameView],
    accepted: Sequence[FrameView] = (),
    config: CurationConfig | None = None,
    *,
    stats: DedupeStats | None = None,
) -> RuleOutcome:
    """Rule 7 with the decisions of :func:`dedupe_reference` and less StructureMatcher work (module doc)."""
    config = config or CurationConfig()
    stats = stats if stats is not None else DedupeStats()
    _check_energies(frames, accepted)
    start = time.perf_counter()
    outcome = walk(frames, accepted, config, FastPredicate(config, stats), stats)
    stats.seconds += time.perf_counter() - start
    return outcome

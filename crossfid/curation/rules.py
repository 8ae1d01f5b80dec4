"""The MPtrj curation rules (``CURATION_RULES.md``) as pure functions: no database access.

The orchestrator reads one material's tasks and frames at one fidelity, wraps them in
:class:`TaskView` / :class:`FrameView`, its primary entry in :class:`ReferenceView`, and
calls :func:`curate_material`, which returns exactly one :class:`Decision` per frame
(``FrameView``, ``Decision`` and the decision names live in :mod:`crossfid.curation.decisions`).

Order of application (``curate_material``)
    1. task-level rules reject whole tasks: :func:`hubbard_consistency` (rule 1), then
       :func:`final_frame_agreement` (rule 2);
    2. frame-level rules on the frames of the remaining tasks: :func:`complete_labels`
       (3), :func:`electronic_convergence` (4), :func:`energy_window` (5), then the extra
       safety rule :func:`min_distance` (overlapping atoms; not one of MPtrj's rules, so it
       runs after them and changes none of their decisions, only keeps overlapping frames
       away from rules 6 and 7);
    3. :func:`reference_frame` (6): the first remaining frame in walking order whose
       energy per atom is within ``reference_frame_tolerance`` of ``E_ref`` is accepted
       (once);
    4. :func:`deduplicate` (7) walks the other remaining frames and accepts or rejects
       each one (see :mod:`crossfid.curation.dedupe`).

    Walking order: tasks in the order given, frames by ``ionic_step``.

Decision vocabulary (``Decision.rule``)
    Rejections, named after the rule that rejected the frame:

    ``no_reference_entry``      the material has no primary entry at this fidelity, so
                                rules 2, 5 and 6 cannot be evaluated; MPtrj only kept
                                materials with a primary entry, so every frame is rejected
    ``hubbard_consistency``     rule 1: task's +U usage / U values differ from the primary entry's
    ``final_frame_agreement``   rule 2: ``|E_last - E_ref| >= 0.02`` eV/atom (or the last frame has no energy)
    ``complete_labels``         rule 3: no (or non-finite) energy, no forces, or no stress while stress is required
    ``electronic_convergence``  rule 4: the SCF hit NELM (``n_electronic_steps >= NELM``) or ``scf_converged`` is False
    ``energy_window``           rule 5: ``ΔE < -0.01`` or ``ΔE > 1`` eV/atom
    ``min_distance``            safety rule (not MPtrj's): two atoms, periodic images included, are closer
                                than ``min_interatomic_distance`` (0.5 Å); ``detail["min_distance"]`` is the
                                measured distance
    ``duplicate``               rule 7: energy within the tier's threshold of an accepted frame and
                                ``StructureMatcher.fit`` matched it to an accepted frame (``detail["matched_frame"]``)

    Acceptances:

    ``reference_frame``         rule 6: the frame matching ``E_ref`` within 1e-5 eV/atom
    ``energy_unique``           rule 7: energy differs from every accepted frame by more than the tier's threshold
    ``structure_unique``        rule 7: energy close to an accepted frame but no accepted frame matches structurally

Comparison conventions: see :mod:`crossfid.curation.config`.

Hubbard rule and "unknown": ``ReferenceView.hubbards`` is ``None`` when the primary
entry's U usage is unknown *or* the fidelity is not GGA/GGA+U; rule 1 is then not
applied. ``{}`` means "known: no U". For tasks, ``None`` and ``{}`` both mean "no U"
(the database stores no-U as NULL). U values of 0 are ignored on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from crossfid.curation import dedupe
from crossfid.curation.config import CurationConfig
from crossfid.curation.decisions import (
    COMPLETE_LABELS,
    ELECTRONIC_CONVERGENCE,
    ENERGY_WINDOW,
    FINAL_FRAME_AGREEMENT,
    HUBBARD_CONSISTENCY,
    MIN_DISTANCE,
    NO_REFERENCE_ENTRY,
    REFERENCE_FRAME,
    Decision,
    FrameView,
    RuleOutcome,
    fmt,
    is_finite,
)
from crossfid.curation.dedupe import DedupeStats
from crossfid.errors import InputError

DedupeMethod = Literal["fast", "reference"]


# --------------------------------------------------------------------------- inputs


def nelm_from_input_parameters(input_parameters: Mapping[str, Any] | None) -> int | None:
    """NELM from a task's ``input_parameters`` (the INCAR; key case-insensitive), None when not recorded.

    No VASP default is substituted: when NELM is unknown, rule 4 relies on ``scf_converged``
    (which the ingestion sources derive with VASP's default NELM = 60).
    """
    for key, value in (input_parameters or {}).items():
        if str(key).upper() == "NELM":
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None


@dataclass(frozen=True, eq=False)
class TaskView:
    """One task: its key (database task id), type, Hubbard U values, NELM and frames (sorted by ``ionic_step``)."""

    key: Hashable
    task_type: str
    hubbards: Mapping[str, float] | None
    nelm: int | None
    frames: tuple[FrameView, ...] = field(default_factory=tuple)
    #: which VASP energy the frames' energies are (``tasks.energy_quantity``); None or "unknown": not known
    energy_quantity: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "frames", tuple(sorted(self.frames, key=lambda f: f.ionic_step)))
        if self.nelm is not None:
            object.__setattr__(self, "nelm", int(self.nelm))


@dataclass(frozen=True)
class ReferenceView:
    """The material's primary entry at this fidelity: uncorrected ``E_ref`` (eV/atom) and its U usage.

    ``hubbards``: element → U of the primary entry, ``{}`` when it uses no U, ``None`` when
    unknown or not applicable (not GGA/GGA+U): then rule 1 is not applied.
    """

    energy_per_atom: float
    hubbards: Mapping[str, float] | None = None
    #: which VASP energy ``energy_per_atom`` is (``reference_entries.energy_quantity``); None: not known
    energy_quantity: str | None = None

    def __post_init__(self) -> None:
        if not is_finite(self.energy_per_atom):
            raise ValueError(f"reference energy per atom must be finite, got {self.energy_per_atom!r}")
        object.__setattr__(self, "energy_per_atom", float(self.energy_per_atom))


# --------------------------------------------------------------------------- outputs


def _reject_task(task: TaskView, rule: str, detail: dict[str, Any], message: str) -> list[Decision]:
    return [Decision(f.key, False, rule, {**detail, "task": task.key}, message) for f in task.frames]


# --------------------------------------------------------------------------- task-level rules


def _u_values(hubbards: Mapping[str, float] | None) -> dict[str, float]:
    return {str(el): float(u) for el, u in (hubbards or {}).items() if float(u) != 0.0}


def hubbard_consistency(tasks: Iterable[TaskView], reference: ReferenceView, config: CurationConfig) -> RuleOutcome:
    """Rule 1: a task uses +U exactly when the primary entry does, with the same U for every element.

    Not applied (every task passes) when ``config.hubbard_consistency`` is False or the
    reference's U usage is unknown / not applicable (``reference.hubbards is None``).
    """
    tasks = tuple(tasks)
    if not config.hubbard_consistency or reference.hubbards is None:
        return RuleOutcome(remaining=tasks)
    ref_u = _u_values(reference.hubbards)
    remaining: list[TaskView] = []
    decisions: list[Decision] = []
    for task in tasks:
        task_u = _u_values(task.hubbards)
        detail: dict[str, Any] = {
            "task_hubbards": dict(sorted(task_u.items())),
            "reference_hubbards": dict(sorted(ref_u.items())),
            "task_uses_u": bool(task_u),
            "reference_uses_u": bool(ref_u),
            "tolerance": config.hubbard_u_tolerance,
        }
        if bool(task_u) != bool(ref_u):
            if task_u:
                message = "task uses +U but the primary entry does not"
            else:
                message = "task uses no +U but the primary entry does"
            decisions += _reject_task(task, HUBBARD_CONSISTENCY, detail, message)
            continue
        differing = {
            el: [task_u.get(el), ref_u.get(el)]
            for el in sorted(set(task_u) | set(ref_u))
            if el not in task_u or el not in ref_u or abs(task_u[el] - ref_u[el]) > config.hubbard_u_tolerance
        }
        if differing:
            parts = ", ".join(
                f"{el}: {'none' if t is None else fmt(t)} vs {'none' if r is None else fmt(r)} eV"
                for el, (t, r) in differing.items()
            )
            message = f"U values differ from the primary entry's (task vs entry: {parts})"
            decisions += _reject_task(task, HUBBARD_CONSISTENCY, {**detail, "differing": differing}, message)
            continue
        remaining.append(task)
    return RuleOutcome(remaining=tuple(remaining), decisions=tuple(decisions))


def final_frame_agreement(tasks: Iterable[TaskView], reference: ReferenceView, config: CurationConfig) -> RuleOutcome:
    """Rule 2: keep a task when its last frame (highest ionic step) has ``|E_last - E_ref| < threshold``.

    A last frame without a (finite) energy cannot show agreement: the task is rejected, and so
    is a task whose energies are another VASP quantity than ``E_ref`` (e.g. ``e_fr_energy``
    against an ``e_0_energy`` entry: for smeared metals they differ by more than rule 6's
    tolerance). A task without frames passes (it has nothing to decide).
    """
    remaining: list[TaskView] = []
    decisions: list[Decision] = []
    threshold = config.final_frame_threshold
    e_ref = reference.energy_per_atom
    for task in tasks:
        if not task.frames:
            remaining.append(task)
            continue
        last = task.frames[-1]
        detail: dict[str, Any] = {
            "last_frame": last.key,
            "last_ionic_step": last.ionic_step,
            "e_ref": e_ref,
            "threshold": threshold,
        }
        if _incomparable(task.energy_quantity, reference.energy_quantity):
            detail.update(task_energy=task.energy_quantity, reference_energy=reference.energy_quantity)
            message = (
                f"the task's energies are {task.energy_quantity}, the primary entry's {reference.energy_quantity}: "
                "different VASP quantities cannot be compared"
            )
            decisions += _reject_task(task, FINAL_FRAME_AGREEMENT, detail, message)
            continue
        if not last.energy_ok:
            detail.update(e_last=None, delta_e=None)
            message = "the last frame has no finite energy, so its agreement with E_ref cannot be checked"
            decisions += _reject_task(task, FINAL_FRAME_AGREEMENT, detail, message)
            continue
        delta = last.energy_per_atom - e_ref
        detail.update(e_last=last.energy_per_atom, delta_e=delta)
        if not abs(delta) < threshold:
            message = f"|E_last - E_ref| = {fmt(abs(delta))} eV/atom >= {fmt(threshold)} eV/atom"
            decisions += _reject_task(task, FINAL_FRAME_AGREEMENT, detail, message)
            continue
        remaining.append(task)
    return RuleOutcome(remaining=tuple(remaining), decisions=tuple(decisions))


def _incomparable(task_quantity: str | None, reference_quantity: str | None) -> bool:
    """Whether two energies are known to be different VASP quantities (unknown ones are compared as before)."""
    known = {q for q in (task_quantity, reference_quantity) if q not in (None, "unknown")}
    return len(known) == 2


# --------------------------------------------------------------------------- frame-level rules


def complete_labels(frames: Iterable[FrameView], config: CurationConfig) -> RuleOutcome:
    """Rule 3: drop frames without a finite energy, without forces, or without stress when stress is required."""
    remaining: list[FrameView] = []
    decisions: list[Decision] = []
    for frame in frames:
        missing: list[str] = []
        if not frame.energy_ok:
            missing.append("energy" if frame.energy_per_atom is None or not frame.has_energy else "finite energy")
        if not frame.has_forces:
            missing.append("forces")
        if config.require_stress and not frame.has_stress:
            missing.append("stress")
        if missing:
            detail = {"missing": missing, "require_stress": config.require_stress}
            message = "no " + ", no ".join(missing)
            if "stress" in missing:
                message += " (stress is a training target)"
            decisions.append(Decision(frame.key, False, COMPLETE_LABELS, detail, message))
        else:
            remaining.append(frame)
    return RuleOutcome(remaining=tuple(remaining), decisions=tuple(decisions))


def electronic_convergence(frames: Iterable[FrameView], nelm: int | None, config: CurationConfig) -> RuleOutcome:
    """Rule 4: drop frames whose SCF hit the step limit.

    Hit = ``n_electronic_steps >= nelm`` when both are known, or ``scf_converged is False``.
    (``config`` is accepted for a uniform signature; the rule has no threshold.)
    """
    del config
    remaining: list[FrameView] = []
    decisions: list[Decision] = []
    for frame in frames:
        steps = frame.n_electronic_steps
        hit_limit = steps is not None and nelm is not None and steps >= nelm
        if hit_limit or frame.scf_converged is False:
            detail = {"n_electronic_steps": steps, "nelm": nelm, "scf_converged": frame.scf_converged}
            if hit_limit:
                message = f"electronic loop hit the step limit ({steps} steps, NELM = {nelm})"
            else:
                message = "SCF did not converge (scf_converged is false)"
            decisions.append(Decision(frame.key, False, ELECTRONIC_CONVERGENCE, detail, message))
        else:
            remaining.append(frame)
    return RuleOutcome(remaining=tuple(remaining), decisions=tuple(decisions))


def energy_window(frames: Iterable[FrameView], reference: ReferenceView, config: CurationConfig) -> RuleOutcome:
    """Rule 5: with ``ΔE = E_frame - E_ref``, drop ``ΔE < lower`` (-0.01) or ``ΔE > upper`` (1) eV/atom.

    Frames must have a finite energy (rule 3 runs first).
    """
    lower, upper = config.energy_window_lower, config.energy_window_upper
    remaining: list[FrameView] = []
    decisions: list[Decision] = []
    for frame in frames:
        delta = frame.energy_per_atom - reference.energy_per_atom
        detail = {"delta_e": delta, "e_frame": frame.energy_per_atom, "e_ref": reference.energy_per_atom}
        if delta < lower:
            detail.update(threshold=lower, bound="lower")
            message = f"ΔE = {fmt(delta)} eV/atom < {fmt(lower)} eV/atom (more stable than the relaxed reference)"
            decisions.append(Decision(frame.key, False, ENERGY_WINDOW, detail, message))
        elif delta > upper:
            detail.update(threshold=upper, bound="upper")
            message = f"ΔE = {fmt(delta)} eV/atom > {fmt(upper)} eV/atom (far from equilibrium)"
            decisions.append(Decision(frame.key, False, ENERGY_WINDOW, detail, message))
        else:
            remaining.append(frame)
    return RuleOutcome(remaining=tuple(remaining), decisions=tuple(decisions))


class AtomPair(NamedTuple):
    """The closest two atoms of a periodic structure: atom ``j`` translated by ``image`` (lattice vectors,
    relative to the stored fractional coordinates) is ``distance`` Å from atom ``i``; ``i == j`` is an atom
    and its own periodic image."""

    distance: float
    i: int
    j: int
    image: tuple[int, int, int]


#: pair distances computed per block (bounds the memory of large cells)
_PAIR_BLOCK = 1 << 20


def _image_ranges(lattice: np.ndarray, cutoff: float) -> np.ndarray:
    """Per lattice direction, the largest |n| of a translation that can bring two atoms within ``cutoff``.

    With fractional differences wrapped to [-1/2, 1/2], a vector with component ``Δf + n``
    along direction k is at least ``|Δf + n| * h_k`` long (``h_k`` the spacing of the lattice
    planes it crosses), so ``|n| < cutoff / h_k + 1/2``.
    """
    # h_k = 1 / |b_k|, with b_k the reciprocal vectors (without 2π): the columns of the inverse
    inverse = np.linalg.inv(lattice)
    spacing = 1.0 / np.sqrt(np.einsum("ij,ij->j", inverse, inverse))
    return (np.ceil(cutoff / spacing + 0.5 + 1e-9) - 1).astype(np.int64)


def shortest_distance(lattice: Any, frac_coords: Any, cutoff: float) -> AtomPair | None:
    """The closest pair of atoms of a periodic cell if it is closer than ``cutoff`` Å, else None. Pure numpy.

    Every pair of distinct atoms and every atom with its own periodic images (which is
    what makes a one-atom cell overlap itself) is considered with every lattice translation
    that can bring it within ``cutoff``, so the distance returned is exact: the minimum of
    the periodic distance matrix with the images included (pymatgen's
    ``Structure.get_neighbor_list(cutoff)`` gives the same minimum). Ties go to an atom's own
    image, then to the first pair in (i, j) order. ``lattice``: 3×3 (rows are lattice vectors,
    Å) or 9 values; ``frac_coords``: n×3 or 3n values. Cells wider than the cutoff in every
    direction cost one distance per pair of atoms (about 0.1 ms for 30 atoms).
    """
    matrix = np.asarray(lattice, dtype=float).reshape(3, 3)
    frac = np.asarray(frac_coords, dtype=float).reshape(-1, 3)
    cutoff = float(cutoff)
    ranges = _image_ranges(matrix, cutoff)
    to_stored: np.ndarray | None = None
    if int(np.prod(2 * ranges + 1)) > 125:
        # a very skewed or tiny cell: search in an LLL-reduced basis of the same lattice (same distances)
        from pymatgen.core import Lattice

        reduced = Lattice(matrix).get_lll_reduced_lattice().matrix
        to_stored = np.rint(reduced @ np.linalg.inv(matrix)).astype(np.int64)  # reduced = to_stored @ matrix
        frac = frac @ np.linalg.inv(to_stored)
        matrix = reduced
        # an atom and its image one (reduced) lattice vector away bound the closest pair: search no farther
        cutoff = min(cutoff, float(np.linalg.norm(matrix, axis=1).min()) * (1 + 1e-9))
        ranges = _image_ranges(matrix, cutoff)
    if not ranges.any():  # the common case: cells wider than the cutoff need no image but the nearest
        images = np.zeros((1, 3), dtype=np.int64)
    else:
        axes = [np.arange(-r, r + 1) for r in ranges]
        images = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)

    best: tuple[float, int, int, np.ndarray] | None = None
    # an atom and its own images: the same for every atom, so atom 0 stands for all
    nonzero = images[np.any(images != 0, axis=1)]
    if len(nonzero) and len(frac):
        lengths = np.linalg.norm(nonzero @ matrix, axis=1)
        k = int(np.argmin(lengths))
        if lengths[k] < cutoff:
            best = (float(lengths[k]), 0, 0, nonzero[k])
    # distinct atoms, a block of pairs at a time
    first, second = np.triu_indices(len(frac), k=1)
    step = max(1, _PAIR_BLOCK // len(images))
    for start in range(0, len(first), step):
        i, j = first[start : start + step], second[start : start + step]
        delta = frac[j] - frac[i]
        shift = np.rint(delta)
        vectors = ((delta - shift)[:, None, :] + images[None, :, :]).reshape(-1, 3) @ matrix
        squares = np.einsum("ni,ni->n", vectors, vectors)
        p, k = divmod(int(np.argmin(squares)), len(images))
        d = math.sqrt(float(squares[p * len(images) + k]))
        if d < cutoff and (best is None or d < best[0]):
            best = (d, int(i[p]), int(j[p]), images[k] - shift[p].astype(np.int64))
    if best is None:
        return None
    distance, a, b, image = best
    if to_stored is not None:
        image = image @ to_stored  # translations of the stored lattice vectors
    return AtomPair(distance, a, b, (int(image[0]), int(image[1]), int(image[2])))


def min_distance(frames: Iterable[FrameView], config: CurationConfig) -> RuleOutcome:
    """Safety rule (not one of MPtrj's): drop frames with two atoms closer than ``min_interatomic_distance``.

    Distances are periodic (:func:`shortest_distance`: images included, so a one-atom cell
    smaller than the threshold overlaps itself); rejected when the shortest one is strictly
    below the threshold. The decision records the measured distance, the two atoms and the
    image. Not applied when ``config.min_interatomic_distance`` is None.
    """
    frames = tuple(frames)
    threshold = config.min_interatomic_distance
    if threshold is None:
        return RuleOutcome(remaining=frames)
    remaining: list[FrameView] = []
    decisions: list[Decision] = []
    for frame in frames:
        pair = shortest_distance(frame.lattice, frame.frac_coords, threshold)
        if pair is None or not pair.distance < threshold:
            remaining.append(frame)
            continue
        numbers = frame.atomic_numbers
        detail = {
            "min_distance": pair.distance,
            "threshold": threshold,
            "sites": [pair.i, pair.j],
            "atomic_numbers": [int(numbers[pair.i]), int(numbers[pair.j])],
            "image": list(pair.image),
        }
        if pair.i == pair.j:
            what = f"atom {pair.i} is {fmt(pair.distance)} Å from its own periodic image"
        else:
            what = f"atoms {pair.i} and {pair.j} are {fmt(pair.distance)} Å apart"
        message = f"overlapping atoms: {what} (< {fmt(threshold)} Å)"
        decisions.append(Decision(frame.key, False, MIN_DISTANCE, detail, message))
    return RuleOutcome(remaining=tuple(remaining), decisions=tuple(decisions))


def reference_frame(frames: Sequence[FrameView], reference: ReferenceView, config: CurationConfig) -> RuleOutcome:
    """Rule 6: accept the first frame (walking order) with ``|E_frame - E_ref| <= tolerance``, once.

    ``remaining`` are the other frames, in order, for rule 7.
    """
    tolerance = config.reference_frame_tolerance
    for index, frame in enumerate(frames):
        delta = frame.energy_per_atom - reference.energy_per_atom
        if abs(delta) <= tolerance:
            detail = {
                "delta_e": delta,
                "e_frame": frame.energy_per_atom,
                "e_ref": reference.energy_per_atom,
                "tolerance": tolerance,
            }
            message = f"reference frame: |E - E_ref| = {fmt(abs(delta))} eV/atom <= {fmt(tolerance)} eV/atom"
            decision = Decision(frame.key, True, REFERENCE_FRAME, detail, message)
            rest = tuple(frames[:index]) + tuple(frames[index + 1 :])
            return RuleOutcome(remaining=rest, accepted=(frame,), decisions=(decision,))
    return RuleOutcome(remaining=tuple(frames))


def deduplicate(
    frames: Sequence[FrameView],
    accepted: Sequence[FrameView],
    config: CurationConfig,
    *,
    method: DedupeMethod = "fast",
    stats: DedupeStats | None = None,
) -> RuleOutcome:
    """Rule 7 (see :mod:`crossfid.curation.dedupe`): ``accepted`` are frames already accepted (the reference frame)."""
    if method == "fast":
        return dedupe.dedupe_fast(frames, accepted, config, stats=stats)
    if method == "reference":
        return dedupe.dedupe_reference(frames, accepted, config, stats=stats)
    raise InputError(f"unknown dedupe method {method!r} (expected 'fast' or 'reference')")


def no_reference_entry(tasks: Iterable[TaskView]) -> list[Decision]:
    """Every frame rejected: without a primary entry, rules 2, 5 and 6 cannot be evaluated."""
    message = "the material has no primary (reference) entry at this fidelity"
    return [
        Decision(frame.key, False, NO_REFERENCE_ENTRY, {"task": task.key}, message)
        for task in tasks
        for frame in task.frames
    ]


# --------------------------------------------------------------------------- the whole material


def curate_material(
    tasks: Sequence[TaskView],
    reference: ReferenceView | None,
    config: CurationConfig | None = None,
    *,
    dedupe: DedupeMethod = "fast",
    stats: DedupeStats | None = None,
) -> list[Decision]:
    """Apply rules 1-7 (and the ``min_distance`` safety rule) to one material at one fidelity; one decision
    per frame, in walking order.

    ``tasks``: in the order rule 7 should walk them (e.g. by task id); frame keys must be
    unique across tasks. ``reference`` None: every frame is rejected (``no_reference_entry``).
    ``dedupe``: "fast" (default) or "reference" (the plain procedure); both give
    identical decisions. ``stats`` accumulates StructureMatcher counts and timings.
    """
    config = config or CurationConfig()
    tasks = tuple(tasks)
    order = [frame.key for task in tasks for frame in task.frames]
    if len(set(order)) != len(order):
        raise ValueError("frame keys must be unique within a material")
    if reference is None:
        return no_reference_entry(tasks)

    decided: dict[Hashable, Decision] = {}

    def record(outcome: RuleOutcome) -> None:
        for decision in outcome.decisions:
            if decision.frame_key in decided:
                raise AssertionError(f"frame {decision.frame_key!r} decided twice")
            decided[decision.frame_key] = decision

    step1 = hubbard_consistency(tasks, reference, config)
    record(step1)
    step2 = final_frame_agreement(step1.remaining, reference, config)
    record(step2)

    candidates: list[FrameView] = []
    for task in step2.remaining:
        step3 = complete_labels(task.frames, config)
        record(step3)
        step4 = electronic_convergence(step3.remaining, task.nelm, config)
        record(step4)
        step5 = energy_window(step4.remaining, reference, config)
        record(step5)
        safety = min_distance(step5.remaining, config)
        record(safety)
        candidates.extend(safety.remaining)

    step6 = reference_frame(candidates, reference, config)
    record(step6)
    step7 = deduplicate(step6.remaining, step6.accepted, config, method=dedupe, stats=stats)
    record(step7)

    missing = [key for key in order if key not in decided]
    if missing:
        raise AssertionError(f"frames without a decision: {missing[:5]}")
    return [decided[key] for key in order]

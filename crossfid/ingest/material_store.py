"""Stored materials as candidates for grouping (read-only queries).

:func:`stored_final_structures` gives, per reduced formula, the structures a new task is
matched against by :func:`crossfid.ingest.grouping.assign_materials`: the final frame (the
frame with the highest ``ionic_step``) of every stored task, and the structure of every
stored reference entry that has one, each with its material's external id.

All tasks' final frames, not one per material: a task ingested again must find its own
final structure (identical to the bit, so adopted without structure matching), or
re-ingesting could give it another material than the first time; and pymatgen's matching
is not transitive, so any one representative could miss a structure its material's other
tasks match. Matching stays cheap: grouping compares a new structure only with candidates
of its formula and space group and stops at the first match.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import Connection, Engine, text

if TYPE_CHECKING:
    from pymatgen.core import Structure

_QUERY = text(
    """
    SELECT m.formula, m.external_id, 0 AS kind, t.external_id AS item,
           f.lattice, f.atomic_numbers, f.frac_coords, NULL::jsonb AS structure
      FROM materials m
      JOIN tasks t ON t.material_id = m.id
      CROSS JOIN LATERAL (
            SELECT lattice, atomic_numbers, frac_coords
              FROM frames
             WHERE frames.task_id = t.id
             ORDER BY ionic_step DESC
             LIMIT 1
      ) f
     WHERE m.formula = ANY(:formulas)
    UNION ALL
    SELECT m.formula, m.external_id, 1 AS kind, r.fidelity AS item,
           NULL, NULL, NULL, r.structure
      FROM materials m
      JOIN reference_entries r ON r.material_id = m.id
     WHERE m.formula = ANY(:formulas) AND r.structure IS NOT NULL
     ORDER BY 1, 2, 3, 4
    """
)


def _structure(lattice, numbers, frac) -> Structure:
    from pymatgen.core import Lattice, Structure

    n = len(numbers)
    return Structure(
        Lattice(np.asarray(lattice, dtype=float).reshape(3, 3)),
        [int(z) for z in numbers],
        np.asarray(frac, dtype=float).reshape(n, 3),
    )


def stored_final_structures(
    connectable: Engine | Connection, formulas: Iterable[str]
) -> dict[str, list[tuple[str, Structure]]]:
    """Reduced formula → [(material external id, structure)] of the stored tasks' final frames and
    reference entries of those formulas (one query; formulas with nothing stored are absent)."""
    from pymatgen.core import Structure

    wanted = sorted(set(formulas))
    if not wanted:
        return {}
    if isinstance(connectable, Engine):
        with connectable.connect() as conn:
            rows = conn.execute(_QUERY, {"formulas": wanted}).all()
    else:
        rows = connectable.execute(_QUERY, {"formulas": wanted}).all()
    found: dict[str, list[tuple[str, Structure]]] = {}
    for formula, material_id, kind, _, lattice, numbers, frac, structure in rows:
        if kind == 0:
            candidate = _structure(lattice, numbers, frac)
        else:
            try:
                candidate = Structure.from_dict(structure)
            except (KeyError, TypeError, ValueError):
                continue  # an entry structure pymatgen cannot read is no candidate
        found.setdefault(formula, []).append((material_id, candidate))
    return found


def database_candidates() -> Callable[[Sequence[str]], dict[str, list[tuple[str, Structure]]]]:
    """A lookup of :func:`stored_final_structures` on the configured database (for the ``crossfid`` commands)."""

    def lookup(formulas: Sequence[str]) -> dict[str, list[tuple[str, Structure]]]:
        from crossfid.runtime.database import engine

        configured = engine()
        try:
            return stored_final_structures(configured, formulas)
        finally:
            configured.dispose()

    return lookup

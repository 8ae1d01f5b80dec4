"""Composition-fraction vectors in CHGNet's convention (94 elements, H..Pu).

Row ``i`` of a composition matrix holds the fraction of atoms of each element in
structure ``i`` (column ``j`` is atomic number ``j + 1``), so each row sums to 1.
This is exactly what ``chgnet.model.composition_model.AtomRef`` builds from a
graph when ``is_intensive=True``; an AtomRef then gives an energy per atom
``c · E_elem`` (eV/atom).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from crossfid.errors import InputError

#: CHGNet's AtomRef covers atomic numbers 1..94
N_ELEMENTS = 94


def _symbols() -> tuple[str, ...]:
    from pymatgen.core.periodic_table import Element

    return tuple(Element.from_Z(z).symbol for z in range(1, N_ELEMENTS + 1))


#: element symbols in column order ("H", "He", ..., "Pu")
SYMBOLS: tuple[str, ...] = _symbols()
_COLUMN = {symbol: i for i, symbol in enumerate(SYMBOLS)}


class CompositionError(InputError):
    """A composition outside the 94 elements of CHGNet's AtomRef, or an empty one."""


def column_of(symbol: str) -> int:
    """Column index of an element symbol (``"Fe"`` → 25)."""
    try:
        return _COLUMN[symbol]
    except KeyError:
        raise CompositionError(f"element {symbol!r} is outside the 94 elements of CHGNet's AtomRef") from None


def fractions_from_atomic_numbers(atomic_numbers: Sequence[int]) -> np.ndarray:
    """Composition fractions (length 94) of one structure given its atomic numbers."""
    z = np.asarray(atomic_numbers, dtype=np.int64).ravel()
    if z.size == 0:
        raise CompositionError("a structure without atoms has no composition")
    if z.min() < 1 or z.max() > N_ELEMENTS:
        raise CompositionError(f"atomic numbers must lie in 1..{N_ELEMENTS}, got {int(z.min())}..{int(z.max())}")
    return np.bincount(z - 1, minlength=N_ELEMENTS).astype(float) / z.size


def fractions_from_amounts(amounts: Mapping[str, float]) -> np.ndarray:
    """Composition fractions (length 94) from element amounts, e.g. ``{"Fe": 2, "O": 3}`` or a formula's."""
    row = np.zeros(N_ELEMENTS)
    for symbol, amount in amounts.items():
        if amount < 0:
            raise CompositionError(f"negative amount {amount} of {symbol}")
        row[column_of(str(symbol))] += float(amount)
    total = row.sum()
    if total <= 0:
        raise CompositionError("an empty composition has no fractions")
    return row / total


def fractions_from_formula(formula: str) -> np.ndarray:
    """Composition fractions (length 94) of a chemical formula (``"SrTiO3"``)."""
    from pymatgen.core import Composition

    composition = Composition(formula)
    return fractions_from_amounts({el.symbol: amt for el, amt in composition.element_composition.items()})


def composition_matrix(atomic_numbers: Iterable[Sequence[int]]) -> np.ndarray:
    """Stack the composition fractions of many structures: shape (n_structures, 94)."""
    rows = [fractions_from_atomic_numbers(z) for z in atomic_numbers]
    return np.vstack(rows) if rows else np.zeros((0, N_ELEMENTS))

"""Mean absolute errors against labels: the one definition used by training, validation and the test-mae benchmark.

Quantities by chgnet's task letter: ``e`` energy per atom, ``f`` force components, ``s`` stress
components (3×3), ``m`` magnetic moments (|m|). Absolute errors are summed in model units (eV/atom,
eV/Å, GPa, μB) over every labelled component; the MAE is that sum over the number of components,
reported in meV/atom, meV/Å, GPa and μB. Components without a label do not count.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["QUANTITIES", "ErrorQuantity", "reported_mae"]


@dataclass(frozen=True)
class ErrorQuantity:
    """One quantity's MAE: metric name, reported unit, and the factor from model units to it."""

    key: str  # chgnet task letter
    name: str
    unit: str
    scale: float


#: the four quantities, in chgnet's task order e, f, s, m
QUANTITIES: dict[str, ErrorQuantity] = {
    "e": ErrorQuantity("e", "energy_mae", "meV/atom", 1000.0),
    "f": ErrorQuantity("f", "force_mae", "meV/Å", 1000.0),
    "s": ErrorQuantity("s", "stress_mae", "GPa", 1.0),
    "m": ErrorQuantity("m", "magmom_mae", "μB", 1.0),
}


def reported_mae(key: str, abs_error_sum: float, n: int) -> float | None:
    """MAE of quantity ``key`` in reported units from the sum of |errors| (model units) over ``n`` components.

    None when ``n`` is 0 (nothing to average over).
    """
    return float(abs_error_sum / n * QUANTITIES[key].scale) if n else None

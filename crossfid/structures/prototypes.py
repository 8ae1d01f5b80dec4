"""Crystal prototypes: small ideal structures (≤ 12 atoms) from a few lattice and Wyckoff parameters.

:data:`CATALOGUE` holds common compounds and elements (rocksalt, zincblende, fluorite,
rutile, perovskite, ReO3, corundum, wurtzite, bcc/fcc metals) with approximate
experimental lattice parameters (Å); :func:`build_prototype` builds any
:class:`Prototype`. Used by the demo corpus generator, the density benchmark and perf/.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Materials Project's U values (eV, Dudarev), applied to these metals in oxides and fluorides
MP_HUBBARD_U: dict[str, float] = {
    "Co": 3.32,
    "Cr": 3.7,
    "Fe": 5.3,
    "Mn": 3.9,
    "Mo": 4.38,
    "Ni": 6.2,
    "V": 3.25,
    "W": 6.2,
}
U_ANIONS = frozenset({"O", "F"})


@dataclass(frozen=True)
class Prototype:
    """A crystal: reduced formula, prototype name, species in the builder's site order, parameters (Å, fractional)."""

    formula: str
    prototype: str
    species: tuple[str, ...]
    params: tuple[float, ...]

    @property
    def elements(self) -> frozenset[str]:
        return frozenset(self.species)

    @property
    def hubbards(self) -> dict[str, float] | None:
        """MP's rule: U on the listed metals in oxides and fluorides."""
        if not self.elements & U_ANIONS:
            return None
        u = {el: MP_HUBBARD_U[el] for el in sorted(self.elements) if el in MP_HUBBARD_U}
        return u or None

    @property
    def low_fidelity(self) -> str:
        return "GGA+U" if self.hubbards else "GGA"


def _p(formula: str, prototype: str, species: str, *params: float) -> Prototype:
    return Prototype(formula, prototype, tuple(species.split()), tuple(params))


#: approximate experimental lattice parameters (Å); the relaxation does the rest
CATALOGUE: tuple[Prototype, ...] = (
    # oxides and fluorides of U metals → GGA+U
    _p("FeO", "rocksalt", "Fe O", 4.33),
    _p("MnO", "rocksalt", "Mn O", 4.45),
    _p("CoO", "rocksalt", "Co O", 4.26),
    _p("NiO", "rocksalt", "Ni O", 4.18),
    _p("VO", "rocksalt", "V O", 4.08),
    _p("CrO2", "rutile", "Cr O", 4.42, 2.92, 0.303),
    _p("VO2", "rutile", "V O", 4.55, 2.86, 0.300),
    _p("MnO2", "rutile", "Mn O", 4.40, 2.87, 0.305),
    _p("MoO2", "rutile", "Mo O", 4.86, 2.81, 0.300),
    _p("FeF2", "rutile", "Fe F", 4.70, 3.31, 0.300),
    _p("MnF2", "rutile", "Mn F", 4.87, 3.31, 0.305),
    _p("CoF2", "rutile", "Co F", 4.70, 3.18, 0.306),
    _p("NiF2", "rutile", "Ni F", 4.65, 3.08, 0.302),
    _p("SrFeO3", "perovskite", "Sr Fe O", 3.85),
    _p("SrMnO3", "perovskite", "Sr Mn O", 3.81),
    _p("SrVO3", "perovskite", "Sr V O", 3.84),
    _p("SrCrO3", "perovskite", "Sr Cr O", 3.82),
    _p("KNiF3", "perovskite", "K Ni F", 4.01),
    _p("KMnF3", "perovskite", "K Mn F", 4.19),
    _p("KCoF3", "perovskite", "K Co F", 4.07),
    _p("KFeF3", "perovskite", "K Fe F", 4.12),
    _p("WO3", "ReO3", "W O", 3.77),
    _p("Fe2O3", "corundum", "Fe O", 5.035, 13.75, 0.3553, 0.3059),
    _p("Cr2O3", "corundum", "Cr O", 4.96, 13.59, 0.3475, 0.3056),
    _p("V2O3", "corundum", "V O", 4.95, 14.00, 0.3463, 0.3122),
    # no U: main-group and d0/d10 compounds, metals, and U metals without O/F → GGA
    _p("MgO", "rocksalt", "Mg O", 4.21),
    _p("CaO", "rocksalt", "Ca O", 4.81),
    _p("NaCl", "rocksalt", "Na Cl", 5.64),
    _p("LiF", "rocksalt", "Li F", 4.03),
    _p("KCl", "rocksalt", "K Cl", 6.29),
    _p("MnS", "rocksalt", "Mn S", 5.22),
    _p("CrN", "rocksalt", "Cr N", 4.15),
    _p("Si", "zincblende", "Si Si", 5.43),
    _p("Ge", "zincblende", "Ge Ge", 5.66),
    _p("ZnS", "zincblende", "Zn S", 5.41),
    _p("GaAs", "zincblende", "Ga As", 5.65),
    _p("AlP", "zincblende", "Al P", 5.46),
    _p("Al", "fcc", "Al", 4.05),
    _p("Cu", "fcc", "Cu", 3.61),
    _p("Ag", "fcc", "Ag", 4.09),
    _p("Ni", "fcc", "Ni", 3.52),
    _p("Fe", "bcc", "Fe", 2.87),
    _p("W", "bcc", "W", 3.17),
    _p("Mo", "bcc", "Mo", 3.15),
    _p("Na", "bcc", "Na", 4.23),
    _p("Li", "bcc", "Li", 3.49),
    _p("TiO2", "rutile", "Ti O", 4.59, 2.96, 0.305),
    _p("SnO2", "rutile", "Sn O", 4.74, 3.19, 0.307),
    _p("MgF2", "rutile", "Mg F", 4.62, 3.05, 0.303),
    _p("SrTiO3", "perovskite", "Sr Ti O", 3.905),
    _p("BaTiO3", "perovskite", "Ba Ti O", 4.00),
    _p("KMgF3", "perovskite", "K Mg F", 3.99),
    _p("CaF2", "fluorite", "Ca F", 5.46),
    _p("CeO2", "fluorite", "Ce O", 5.41),
    _p("ZrO2", "fluorite", "Zr O", 5.07),
    _p("Li2O", "antifluorite", "O Li", 4.61),
    _p("Al2O3", "corundum", "Al O", 4.76, 12.99, 0.3520, 0.3060),
    _p("ZnO", "wurtzite", "Zn O", 3.25, 5.21, 0.382),
)
BY_FORMULA: dict[str, Prototype] = {proto.formula: proto for proto in CATALOGUE}


_FCC_TRANSLATIONS = ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0))


def _face_centred(a: float, species: Sequence[str], basis: Sequence[Sequence[float]]):
    """Conventional cubic F-centred cell (pymatgen's ``from_spacegroup("Fm-3m")`` takes ~0.6 s per call)."""
    from pymatgen.core import Lattice, Structure

    sites = [(el, (np.asarray(b) + t) % 1.0) for el, b in zip(species, basis, strict=True) for t in _FCC_TRANSLATIONS]
    return Structure(Lattice.cubic(a), [el for el, _ in sites], [xyz for _, xyz in sites])


def build_prototype(proto: Prototype):
    """The ideal (unperturbed) pymatgen ``Structure`` of a catalogue entry (≤ 12 atoms)."""
    from pymatgen.core import Lattice, Structure

    kind, sp, prm = proto.prototype, list(proto.species), proto.params
    if kind == "rocksalt":
        s = _face_centred(prm[0], sp, [[0, 0, 0], [0.5, 0.5, 0.5]])
    elif kind == "zincblende":
        s = Structure.from_spacegroup("F-43m", Lattice.cubic(prm[0]), sp, [[0, 0, 0], [0.25, 0.25, 0.25]])
    elif kind in ("fluorite", "antifluorite"):
        s = _face_centred(prm[0], sp[:1] + sp[1:] * 2, [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]])
    elif kind == "fcc":
        s = _face_centred(prm[0], sp, [[0, 0, 0]])
    elif kind == "bcc":
        s = Structure.from_spacegroup("Im-3m", Lattice.cubic(prm[0]), sp, [[0, 0, 0]])
    elif kind == "rutile":
        a, c, u = prm
        s = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(a, c), sp, [[0, 0, 0], [u, u, 0]])
    elif kind == "perovskite":  # A B X3 with B at the origin
        s = Structure.from_spacegroup("Pm-3m", Lattice.cubic(prm[0]), sp, [[0.5, 0.5, 0.5], [0, 0, 0], [0.5, 0, 0]])
    elif kind == "ReO3":
        s = Structure.from_spacegroup("Pm-3m", Lattice.cubic(prm[0]), sp, [[0, 0, 0], [0.5, 0, 0]])
    elif kind == "corundum":
        a, c, z, x = prm
        conventional = Structure.from_spacegroup("R-3c", Lattice.hexagonal(a, c), sp, [[0, 0, z], [x, 0, 0.25]])
        s = conventional.get_primitive_structure()
    elif kind == "wurtzite":
        a, c, u = prm
        s = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(a, c), sp, [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, u]])
    else:  # pragma: no cover - catalogue typo
        raise ValueError(f"unknown prototype {kind!r}")
    s = s.get_sorted_structure()
    if len(s) > 12:  # pragma: no cover - guarded by a test over the whole catalogue
        raise ValueError(f"{proto.formula} ({kind}) has {len(s)} atoms, more than 12")
    return s

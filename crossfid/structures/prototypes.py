"""Crystal prototypes: small ideal structures (≤ 12 atoms) from a few lattice and Wyckoff parameters.

:data:`CATALOGUE` holds common compounds and elements (rocksalt, zincblende, fluorite,
rutile, perovskite, ReO3, corundum, wurtzite, bcc/fcc metals) with approximate
experimental lattice parameters (Å); :func:`build_prototype` builds any
:class:`Prototype`. Used by the demo corpus generator, the density benchmark and perf/.

:data:`ELEMENTAL_PHASES` holds, for every element of the catalogue (and H, C, Se, Br, I),
a small stand-in for its ground-state elemental phase as the Materials Project uses it
for formation energies and hulls: the catalogue's own metal/semiconductor entry when
there is one, else fcc/bcc/hcp metals, diamond α-Sn, graphite C, A7 As, α-Ga, black P,
trigonal Se. Approximations (each recorded in :attr:`Prototype.note`): MP's molecular
solids (H2, N2, O2, F2, Cl2, Br2, I2) are one dimer in a 10 Å cubic box, relaxed at
fixed cell (:attr:`Prototype.molecular`); α-S (128 atoms) is one S8 crown ring in a
10 Å box; α-Mn (58 atoms) is fcc Mn.
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
    note: str = ""  # how it approximates the real phase, when it does

    @property
    def molecular(self) -> bool:
        """One molecule in a box of vacuum: relaxed at fixed cell."""
        return self.prototype in ("dimer", "S8-ring")

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

#: side (Å) of the cubic box holding one molecule of a molecular elemental phase
MOLECULE_BOX = 10.0
_BOX_NOTE = "MP's reference is the molecular solid; the demo's approximation is one {} molecule in a 10 Å cubic box"


def _element(symbol: str, prototype: str, *params: float, note: str = "") -> Prototype:
    species = (symbol, symbol) if prototype == "diamond" else (symbol,)
    return Prototype(_reduced_formula(symbol), prototype, species, tuple(params), note)


def _reduced_formula(symbol: str) -> str:
    """pymatgen's reduced formula of the element (``"O2"`` for O, ``"Br"`` for Br)."""
    from pymatgen.core import Composition

    return Composition(symbol).reduced_formula


def _dimer(symbol: str, bond: float) -> Prototype:
    return _element(symbol, "dimer", MOLECULE_BOX, bond, note=_BOX_NOTE.format(f"{symbol}2"))


#: element symbol → its ground-state elemental phase (approximate experimental parameters, Å; see the module doc)
ELEMENTAL_PHASES: dict[str, Prototype] = {
    proto.species[0]: proto for proto in CATALOGUE if len(proto.elements) == 1
} | {
    proto.species[0]: proto
    for proto in (
        _dimer("H", 0.74),
        _element("C", "graphite", 2.46, 6.71),
        _dimer("N", 1.10),
        _dimer("O", 1.21),
        _dimer("F", 1.42),
        _element("Mg", "hcp", 3.21, 5.21),
        _element("P", "A17", 3.314, 10.48, 4.376, 0.10168, 0.08056, note="black phosphorus (Cmce)"),
        _element("S", "S8-ring", MOLECULE_BOX, 2.05, 108.0, note=_BOX_NOTE.format("S8 (crown ring)")),
        _dimer("Cl", 1.99),
        _element("K", "bcc", 5.23),
        _element("Ca", "fcc", 5.58),
        _element("Ti", "hcp", 2.95, 4.68),
        _element("V", "bcc", 3.03),
        _element("Cr", "bcc", 2.88),
        _element("Mn", "fcc", 3.63, note="MP's ground state is α-Mn (58 atoms); the demo's approximation is fcc Mn"),
        _element("Co", "hcp", 2.51, 4.07),
        _element("Zn", "hcp", 2.66, 4.95),
        _element("Ga", "A11", 4.52, 7.66, 4.53, 0.1549, 0.0810, note="α-Ga (Cmce)"),
        _element("As", "A7", 3.76, 10.55, 0.227, note="grey arsenic (R-3m)"),
        _element("Se", "A8", 4.366, 4.954, 0.2254, note="trigonal Se chains (P3_121)"),
        _dimer("Br", 2.28),
        _element("Sr", "fcc", 6.08),
        _element("Zr", "hcp", 3.23, 5.15),
        _element("Sn", "diamond", 6.49, note="α-Sn (diamond), MP's ground state at GGA"),
        _dimer("I", 2.67),
        _element("Ba", "bcc", 5.02),
        _element("Ce", "fcc", 5.16),
    )
}


_FCC_TRANSLATIONS = ((0.0, 0.0, 0.0), (0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0))


def _face_centred(a: float, species: Sequence[str], basis: Sequence[Sequence[float]]):
    """Conventional cubic F-centred cell (pymatgen's ``from_spacegroup("Fm-3m")`` takes ~0.6 s per call)."""
    from pymatgen.core import Lattice, Structure

    sites = [(el, (np.asarray(b) + t) % 1.0) for el, b in zip(species, basis, strict=True) for t in _FCC_TRANSLATIONS]
    return Structure(Lattice.cubic(a), [el for el, _ in sites], [xyz for _, xyz in sites])


def _s8_ring(box: float, bond: float, angle: float) -> np.ndarray:
    """Cartesian coordinates (Å) of an S8 crown ring (D4d) centred in the box: bond length, bond angle (°)."""
    radius = 2 * bond * np.sin(np.radians(angle) / 2) / np.sqrt(2)  # second neighbours are 90° apart
    height = np.sqrt(bond**2 - (2 * radius * np.sin(np.pi / 8)) ** 2)
    phi = np.arange(8) * np.pi / 4
    return np.column_stack([radius * np.cos(phi), radius * np.sin(phi), height / 2 * (-1.0) ** np.arange(8)]) + box / 2


def build_prototype(proto: Prototype):
    """The ideal (unperturbed) pymatgen ``Structure`` of a catalogue entry (≤ 12 atoms)."""
    from pymatgen.core import Lattice, Structure

    kind, sp, prm = proto.prototype, list(proto.species), proto.params
    if kind == "rocksalt":
        s = _face_centred(prm[0], sp, [[0, 0, 0], [0.5, 0.5, 0.5]])
    elif kind in ("zincblende", "diamond"):
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
    elif kind == "hcp":
        a, c = prm
        s = Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(a, c), sp, [[1 / 3, 2 / 3, 0.25]])
    elif kind == "graphite":
        a, c = prm
        s = Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(a, c), sp * 2, [[0, 0, 0.25], [1 / 3, 2 / 3, 0.25]])
    elif kind in ("A11", "A17"):  # α-Ga, black P: Cmce, 8f (0, y, z)
        a, b, c, y, z = prm
        s = Structure.from_spacegroup("Cmce", Lattice.orthorhombic(a, b, c), sp, [[0, y, z]]).get_primitive_structure()
    elif kind == "A7":  # grey As: R-3m, 6c (0, 0, z)
        a, c, z = prm
        s = Structure.from_spacegroup("R-3m", Lattice.hexagonal(a, c), sp, [[0, 0, z]]).get_primitive_structure()
    elif kind == "A8":  # trigonal Se: P3_121, 3a (x, 0, 1/3)
        a, c, x = prm
        s = Structure.from_spacegroup("P3_121", Lattice.hexagonal(a, c), sp, [[x, 0, 1 / 3]])
    elif kind == "dimer":
        box, bond = prm
        centre = np.full(3, box / 2)
        s = Structure(Lattice.cubic(box), sp * 2, [centre, centre + [bond, 0, 0]], coords_are_cartesian=True)
    elif kind == "S8-ring":
        box, bond, angle = prm
        s = Structure(Lattice.cubic(box), sp * 8, _s8_ring(box, bond, angle), coords_are_cartesian=True)
    else:  # pragma: no cover - catalogue typo
        raise ValueError(f"unknown prototype {kind!r}")
    s = s.get_sorted_structure()
    if len(s) > 12:  # pragma: no cover - guarded by a test over the whole catalogue
        raise ValueError(f"{proto.formula} ({kind}) has {len(s)} atoms, more than 12")
    return s

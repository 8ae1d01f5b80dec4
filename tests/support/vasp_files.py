"""Writers of small but real VASP output files for the VASP-directory source tests.

:func:`vasprun_xml` emits a vasprun.xml laid out the way VASP 6 writes it
(``generator``, ``incar``, ``kpoints``, ``parameters`` with nested separators,
``atominfo``, ``structure name="initialpos"``, one ``calculation`` per ionic step
with its ``scstep`` blocks, ``structure``, ``forces``, ``stress`` and ``energy``,
then ``structure name="finalpos"``), with every number written as the shortest
exact decimal of the given float so a parser can be checked for exact round trips.
:func:`outcar` emits the parts of an OUTCAR that pymatgen's ``Outcar`` reads
(bands, energies, the final ``magnetization (x)`` table).
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MASSES = {"Si": 28.085, "Fe": 55.847, "O": 16.0, "Mn": 54.938, "Li": 6.941}
VALENCE = {"Si": 4.0, "Fe": 14.0, "O": 6.0, "Mn": 13.0, "Li": 3.0}
POTCARS = {
    "Si": "PAW_PBE Si 05Jan2001",
    "Fe": "PAW_PBE Fe_pv 06Sep2000",
    "O": "PAW_PBE O 08Apr2002",
    "Mn": "PAW_PBE Mn_pv 02Aug2007",
    "Li": "PAW_PBE Li_sv 10Sep2004",
}


@dataclass
class Step:
    """One ionic step as VASP writes it (stress in kBar, VASP sign: compressive positive)."""

    frac_coords: Sequence[Sequence[float]]
    e_fr_energy: float
    forces: Sequence[Sequence[float]]
    stress_kbar: Sequence[Sequence[float]]
    n_scsteps: int = 12
    lattice: Sequence[Sequence[float]] | None = None  # None: the run's initial lattice
    e_0_energy: float | None = None  # default e_fr_energy + 0.0125 (so a mix-up is visible)
    e_wo_entrp: float | None = None


@dataclass
class Run:
    """A whole VASP run: cell, species, inputs and ionic steps."""

    lattice: Sequence[Sequence[float]]
    symbols: Sequence[str]  # one per atom, grouped by species as in POSCAR
    frac_coords: Sequence[Sequence[float]]
    steps: list[Step]
    incar: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)  # overrides of the default parameter set
    potcars: Sequence[str] | None = None  # one per species; default from POTCARS
    version: str = "6.3.2"

    @property
    def species(self) -> list[str]:
        out: list[str] = []
        for symbol in self.symbols:
            if not out or out[-1] != symbol:
                out.append(symbol)
        return out


def _num(value: float) -> str:
    return repr(float(value))


def _item(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f'<i type="logical" name="{name}"> {"T" if value else "F"}  </i>'
    if isinstance(value, int):
        return f'<i type="int" name="{name}">{value:>6}</i>'
    if isinstance(value, float):
        return f'<i name="{name}">{value:16.8f}</i>'
    if isinstance(value, list | tuple):
        if all(isinstance(v, bool) for v in value):
            return f'<v type="logical" name="{name}">' + " ".join("T" if v else "F" for v in value) + "</v>"
        if all(isinstance(v, int) for v in value):
            return f'<v type="int" name="{name}">' + "".join(f"{v:>7}" for v in value) + "</v>"
        return f'<v name="{name}">' + "".join(f"{float(v):16.8f}" for v in value) + "</v>"
    return f'<i type="string" name="{name}">{value}</i>'


def _varray(name: str, rows: Any, indent: str) -> list[str]:
    lines = [f'{indent}<varray name="{name}" >']
    for row in np.asarray(rows, dtype=float):
        lines.append(f"{indent} <v>" + " ".join(f"{_num(x):>22}" for x in row) + " </v>")
    lines.append(f"{indent}</varray>")
    return lines


def _structure(lattice: Any, frac: Any, indent: str, name: str | None = None) -> list[str]:
    lattice = np.asarray(lattice, dtype=float)
    head = f'{indent}<structure name="{name}" >' if name else f"{indent}<structure>"
    return [
        head,
        f"{indent} <crystal>",
        *_varray("basis", lattice, indent + "  "),
        f'{indent}  <i name="volume">{abs(np.linalg.det(lattice)):16.8f} </i>',
        *_varray("rec_basis", np.linalg.inv(lattice).T, indent + "  "),
        f"{indent} </crystal>",
        *_varray("positions", frac, indent + " "),
        f"{indent}</structure>",
    ]


#: parameters VASP writes for a plain PBE run; LDAU* here are deliberately wrong (VASP mangles them)
DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "general": {"SYSTEM": "unknown system", "LCOMPAT": False},
    "electronic": {
        "PREC": "accura",
        "ENMAX": 520.0,
        "ISPIN": 2,
        "NELM": 60,
        "NELMIN": 2,
        "EDIFF": 1e-05,
        "ISMEAR": -5,
        "SIGMA": 0.05,
        "LNONCOLLINEAR": False,
        "LSORBIT": False,
        "ICHARG": 2,
        "ISTART": 0,
    },
    "electronic exchange-correlation": {
        "GGA": "--",
        "LHFCALC": False,
        "AEXX": 0.0,
        "AGGAX": 1.0,
        "AGGAC": 1.0,
        "ALDAC": 1.0,
        "HFSCREEN": 0.0,
        "LUSE_VDW": False,
        "LASPH": False,
        "LDAU": False,
        "LDAUTYPE": 2,
        "LDAUL": [-1],
        "LDAUU": [0.0],
        "LDAUJ": [0.0],
    },
    "ionic": {"IBRION": 2, "NSW": 99, "ISIF": 3, "EDIFFG": -0.05, "POTIM": 0.5},
    "orbital magnetization": {"LORBIT": 11},
}


def vasprun_xml(run: Run, *, complete: bool = True) -> str:
    """The text of a vasprun.xml for ``run`` (``complete=False`` leaves out the trailing final structure)."""
    species = run.species
    counts = [sum(1 for s in run.symbols if s == sp) for sp in species]
    potcars = list(run.potcars or [POTCARS[s] for s in species])
    out = ['<?xml version="1.0" encoding="ISO-8859-1"?>', "<modeling>", " <generator>"]
    out += [
        '  <i name="program" type="string">vasp </i>',
        f'  <i name="version" type="string">{run.version}  </i>',
        '  <i name="subversion" type="string">18Apr23 (build Apr 20 2023 10:00:00) complex            parallel </i>',
        '  <i name="platform" type="string">LinuxIFC </i>',
        '  <i name="date" type="string">2024 01 15 </i>',
        '  <i name="time" type="string">10:20:30 </i>',
        " </generator>",
        " <incar>",
        *(f"  {_item(k, v)}" for k, v in run.incar.items()),
        " </incar>",
        " <kpoints>",
        '  <generation param="Gamma">',
        '   <v type="int" name="divisions">       4        4        4 </v>',
        '   <v name="usershift">      0.00000000      0.00000000      0.00000000 </v>',
        '   <v name="genvec1">      0.25000000      0.00000000      0.00000000 </v>',
        '   <v name="genvec2">      0.00000000      0.25000000      0.00000000 </v>',
        '   <v name="genvec3">      0.00000000      0.00000000      0.25000000 </v>',
        '   <v name="shift">      0.00000000      0.00000000      0.00000000 </v>',
        "  </generation>",
        '  <varray name="kpointlist" >',
        "   <v>       0.00000000       0.00000000       0.00000000 </v>",
        "   <v>       0.25000000       0.00000000       0.00000000 </v>",
        "  </varray>",
        '  <varray name="weights" >',
        "   <v>       0.50000000 </v>",
        "   <v>       0.50000000 </v>",
        "  </varray>",
        " </kpoints>",
        " <parameters>",
    ]
    overrides = dict(run.parameters)
    for section, values in DEFAULT_PARAMETERS.items():
        out.append(f'  <separator name="{section}" >')
        for key, value in values.items():
            out.append(f"   {_item(key, overrides.pop(key, value))}")
        out.append("  </separator>")
    if overrides:
        out.append('  <separator name="extra" >')
        out += [f"   {_item(k, v)}" for k, v in overrides.items()]
        out.append("  </separator>")
    out += [
        " </parameters>",
        " <atominfo>",
        f"  <atoms>{len(run.symbols):>8} </atoms>",
        f"  <types>{len(species):>8} </types>",
        '  <array name="atoms" >',
        '   <dimension dim="1">ion</dimension>',
        '   <field type="string">element</field>',
        '   <field type="int">atomtype</field>',
        "   <set>",
    ]
    for symbol in run.symbols:
        out.append(f"    <rc><c>{symbol:<2}</c><c>{species.index(symbol) + 1:>4}</c></rc>")
    out += [
        "   </set>",
        "  </array>",
        '  <array name="atomtypes" >',
        '   <dimension dim="1">type</dimension>',
        '   <field type="int">atomspertype</field>',
        '   <field type="string">element</field>',
        "   <field>mass</field>",
        "   <field>valence</field>",
        '   <field type="string">pseudopotential</field>',
        "   <set>",
    ]
    for sp, count, potcar in zip(species, counts, potcars, strict=True):
        out.append(
            f"    <rc><c>{count:>4}</c><c>{sp:<2}</c><c>{MASSES.get(sp, 1.0):16.8f}</c>"
            f"<c>{VALENCE.get(sp, 1.0):16.8f}</c><c>  {potcar}                   </c></rc>"
        )
    out += ["   </set>", "  </array>", " </atominfo>"]
    out += _structure(run.lattice, run.frac_coords, " ", "initialpos")
    for step in run.steps:
        e_fr = float(step.e_fr_energy)
        e_0 = e_fr + 0.0125 if step.e_0_energy is None else float(step.e_0_energy)
        e_wo = (e_fr + e_0) / 2 if step.e_wo_entrp is None else float(step.e_wo_entrp)
        out.append(" <calculation>")
        for k in range(step.n_scsteps):
            delta = 10.0 ** (-k) if k < step.n_scsteps - 1 else 0.0
            out += [
                "  <scstep>",
                '   <time name="dav">    0.12    0.13</time>',
                "   <energy>",
                f'    <i name="alphaZ">{121.40351254:18.8f} </i>',
                f'    <i name="ewald">{-1234.5678:18.8f} </i>',
                f'    <i name="e_fr_energy">{e_fr + delta:18.8f} </i>',
                f'    <i name="e_wo_entrp">{e_wo + delta:18.8f} </i>',
                f'    <i name="e_0_energy">{e_0 + delta:18.8f} </i>',
                "   </energy>",
                "  </scstep>",
            ]
        out += _structure(run.lattice if step.lattice is None else step.lattice, step.frac_coords, "  ")
        out += _varray("forces", step.forces, "  ")
        out += _varray("stress", step.stress_kbar, "  ")
        out += [
            "  <energy>",
            f'   <i name="e_fr_energy">{_num(e_fr):>22} </i>',
            f'   <i name="e_wo_entrp">{_num(e_wo):>22} </i>',
            f'   <i name="e_0_energy">{_num(e_0):>22} </i>',
            "  </energy>",
            '  <time name="totalsc">    1.52    1.60</time>',
            " </calculation>",
        ]
    if complete:
        last = run.steps[-1] if run.steps else None
        final_lattice = run.lattice if last is None or last.lattice is None else last.lattice
        final_frac = run.frac_coords if last is None else last.frac_coords
        out += _structure(final_lattice, final_frac, " ", "finalpos")
        out.append("</modeling>")
    return "\n".join(out) + "\n"


def write_vasprun(directory: Path, run: Run, name: str = "vasprun.xml", *, complete: bool = True) -> Path:
    """Write ``run`` to ``directory/name`` (gzip-compressed when the name ends in .gz)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    data = vasprun_xml(run, complete=complete).encode("latin-1")
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


def outcar(magmoms: Sequence[float], e_fr_energy: float, *, nbands: int = 24) -> str:
    """The parts of an OUTCAR that pymatgen's ``Outcar`` needs, with a final ``magnetization (x)`` table."""
    lines = [
        " vasp.6.3.2 18Apr23 (build Apr 20 2023 10:00:00) complex",
        " running on    4 total cores",
        "   k-points           NKPTS =      2   k-points in BZ     NKDIM =      2"
        f"   number of bands    NBANDS=    {nbands}",
        "   total plane-waves  NPLWV =  13824",
        "   ISPIN  =      2    spin polarized calculation?",
        "   IBRION =      2    ionic relax: 0-MD 1-quasi-New 2-CG",
        f" number of electron      20.0000000 magnetization       {sum(magmoms):10.7f}",
        "",
        " E-fermi :   5.1234     XC(G=0): -10.0000     alpha+bet :-11.0000",
        "",
        "  FREE ENERGIE OF THE ION-ELECTRON SYSTEM (eV)",
        "  ---------------------------------------------------",
        f"  free  energy   TOTEN  = {e_fr_energy:20.8f} eV",
        "",
        f"  energy  without entropy= {e_fr_energy:20.8f}  energy(sigma->0) = {e_fr_energy:20.8f}",
        "",
        " magnetization (x)",
        "",
        "# of ion       s       p       d       tot",
        "------------------------------------------",
    ]
    for k, m in enumerate(magmoms, start=1):
        lines.append(f"    {k:>2}        0.000   0.000 {m:7.3f} {m:8.3f}")
    lines += [
        "--------------------------------------------------",
        f"tot          0.000   0.000 {sum(magmoms):7.3f} {sum(magmoms):8.3f}",
        "",
        " General timing and accounting informations for this job:",
        " ========================================================",
        "                  Total CPU time used (sec):       12.345",
        "                            User time (sec):       12.000",
        "                          System time (sec):        0.345",
        "                         Elapsed time (sec):       13.000",
        "                   Maximum memory used (kb):      123456.",
        "                   Average memory used (kb):          N/A",
    ]
    return "\n".join(lines) + "\n"


def feo_run(
    incar: Mapping[str, Any] | None = None,
    *,
    n_steps: int = 3,
    parameters: Mapping[str, Any] | None = None,
    seed: int = 0,
    nelm: int = 60,
    scsteps: Sequence[int] | None = None,
) -> Run:
    """A 2-atom rocksalt-like FeO cell relaxing over ``n_steps`` steps, with irregular (exact-test) numbers."""
    rng = np.random.default_rng(seed)
    a = 4.3 + 0.01 * seed
    lattice = [[0.0, a / 2, a / 2], [a / 2, 0.0, a / 2], [a / 2, a / 2, 0.0]]
    frac0 = [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]
    steps = []
    for k in range(n_steps):
        frac = np.array(frac0) + rng.normal(scale=0.01 / (k + 1), size=(2, 3))
        frac[0] = 0.0
        forces = rng.normal(scale=0.2 / (k + 1), size=(2, 3))
        forces[1] = -forces[0]
        stress = rng.normal(scale=5.0, size=(3, 3))
        stress = (stress + stress.T) / 2
        step_lattice = np.array(lattice) * (1.0 - 0.002 * k)
        steps.append(
            Step(
                frac_coords=frac.tolist(),
                lattice=step_lattice.tolist(),
                e_fr_energy=-15.123456789 - 0.05 * k + float(rng.normal(scale=1e-3)),
                forces=forces.tolist(),
                stress_kbar=stress.tolist(),
                n_scsteps=(scsteps[k] if scsteps else max(15 - 3 * k, 4)),
            )
        )
    default_incar = {
        "PREC": "Accurate",
        "ENCUT": 520.0,
        "ISPIN": 2,
        "MAGMOM": [5.0, 0.6],
        "IBRION": 2,
        "NSW": 99,
        "ISIF": 3,
        "EDIFFG": -0.05,
        "NELM": nelm,
        "LORBIT": 11,
    }
    params = {"NELM": nelm, **(parameters or {})}
    return Run(
        lattice=lattice,
        symbols=["Fe", "O"],
        frac_coords=frac0,
        steps=steps,
        incar={**default_incar, **(incar or {})},
        parameters=params,
    )

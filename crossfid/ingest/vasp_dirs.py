"""VASP calculation directories → canonical records.

A *calculation directory* is any directory holding ``vasprun.xml`` or ``vaspout.h5``
files: the plain names and custodian/atomate-style suffixed copies
(``vasprun.xml.relax1``, ``vasprun.xml.relax2.gz``, ``vaspout.h5.relax1``, ...), each
optionally compressed (.gz, .bz2, .xz, .lzma). When both a ``vasprun.xml`` and a
``vaspout.h5`` of the same suffix exist, **the vasprun.xml is read**: it has every
electronic step (so SCF convergence against NELM), the full parameter set VASP used and
the POTCAR titles, and it is what pymatgen, emmet and the Materials Project parse;
pymatgen's ``Vaspout`` has no electronic steps. A ``vaspout.h5`` is read only when no
vasprun.xml of its suffix is there (VASP 6 runs with vasprun.xml switched off, or
archived without it).
The files of one directory are read in suffix order (natural order of the suffix,
``relax2`` before ``relax10``, the bare name last because custodian renames finished
runs) and one :class:`~crossfid.ingest.records.Bundle` is made per directory.
Consecutive files with the same classification (fidelity, run type, U values, task
type) form one task whose frames follow each other in file order, so a double
relaxation is one task; a directory whose files differ (e.g. custodian's PBEsol
pre-relaxation followed by r2SCAN) gives one task per run of equal files. A root given
to :func:`find_calculations` that holds no such file is an :class:`InputError` naming
the files looked for.

What is read, per vasprun.xml (pymatgen ``Vasprun``, no DOS/eigenvalues/POTCAR files):

* every ``<calculation>`` (ionic step): structure, the energy extrapolated to σ → 0
  (``e_0_energy``, see "Energy" below), forces, stress (kBar, VASP sign → GPa, tensile
  positive via :func:`stress_from_vasp_kbar`), and the number of ``<scstep>`` blocks:
  ``scf_converged`` is ``n < NELM`` (VASP stops at NELM without converging);
* the INCAR as the user wrote it (``vasprun.incar``, stored as
  ``Task.input_parameters``) and the full parameter set VASP used
  (``vasprun.parameters``). The fidelity is classified from the parameters
  overlaid with the INCAR, except that ``LDAU*`` come from the INCAR only
  (VASP mangles them in ``<parameters>``; see emmet's ``run_type``) and the
  placeholders ``GGA = --``/``METAGGA = --`` are dropped so that the POTCAR decides;
* species order and POTCAR functional from ``<atominfo>`` (``PAW_PBE Fe_pv ...`` →
  species ``Fe``, functional ``PBE``).

Per vaspout.h5 (pymatgen ``Vaspout``, which needs ``h5py``): the ionic steps
(structure, energies, forces), the INCAR (also the classification's parameters: the
file has no separate parameter set; VASP writes logical tags as 0/1, which are turned
back into booleans with pymatgen's table of INCAR tag types), the POTCAR titles, and the
stress of every step, read from ``intermediate/ion_dynamics/stress`` (kBar, VASP sign)
because pymatgen 2026.10 looks for a ``stresses`` key that VASP does not write. The
file has no electronic steps, so ``n_electronic_steps`` and ``scf_converged`` are
unknown (None). Magnetic moments come from the file itself, for **every** ionic step
(the ``tot`` of the ``magnetization`` site property pymatgen builds from
``ion_dynamics/magnetism``), for collinear spin-polarised runs. An HDF5 file is read
whole or not at all: a damaged or truncated one is one Refusal.

Energy: frames store VASP's energy extrapolated to σ → 0, ``e_0_energy``
(``Task.energy_quantity = "e_0_energy"``), the quantity of Materials Project entries and
task ``output.energy``, so a task's frames and its reference entry (also
``e_0_energy``) are the same quantity as MP's. Per ionic step it is computed as
pymatgen's ``Vasprun.final_energy`` computes it for the last step
(pymatgen/io/vasp/outputs.py, ``Vasprun.final_energy``): VASP 5 writes a wrong
``e_0_energy`` into the ``<energy>`` block of a ``<calculation>`` (0.0 in 5.2, a
mixed-up value in 5.4; VASP forum t=16942), so when it disagrees by more than 1e-7 eV
with ``e_fr_energy + (e_0_energy − e_fr_energy)`` of the step's last electronic step,
the latter, rounded to 8 decimals, is taken. The last frame's energy is therefore
exactly ``Vasprun.final_energy``. A vaspout.h5 holds ``energy(sigma->0)`` of each step
directly.

Magnetic moments of a vasprun.xml run: vasprun.xml has no per-atom moments for ionic
steps, so they come from the OUTCAR next to the vasprun file (same suffix:
``OUTCAR.relax2.gz`` for ``vasprun.xml.relax2.gz``), read with pymatgen's ``Outcar``.
VASP prints the ``magnetization (x)`` table once, for the final ionic step, so only the
**last frame** of a task gets ``magmoms`` (the ``tot`` column), and only when the run is
collinear spin-polarised (ISPIN = 2, no LNONCOLLINEAR/LSORBIT), the vasprun.xml is
complete, the table has one row per atom and the OUTCAR's final free energy equals
the last step's ``e_fr_energy`` (within 1e-4 eV; a guard against a stale OUTCAR).
Otherwise frames have no magmoms.

Damaged files: a vasprun.xml cut off mid-file (a killed job) or a truncated
compressed stream is parsed as far as it goes. Complete ionic steps are kept; the
``<calculation>`` blocks that were started but not finished are dropped and
reported as a :class:`Refusal` located at that step. A damaged file never gives a
reference entry or OUTCAR moments. A file with no complete ionic step, or that
cannot be read at all, is one Refusal with its path. Non-self-consistent runs
(ICHARG >= 10), MD and unsupported functionals are refused by
:func:`~crossfid.ingest.fidelity.classify_incar`.

Hostile files: a compressed file is decompressed piece by piece and refused as soon
as it expands beyond ``CROSSFID_MAX_DECOMPRESSED_BYTES`` (default 8 GiB; an
uncompressed file larger than that is refused by its size), so a decompression bomb
never fills memory. A vasprun.xml with a ``<!DOCTYPE`` or ``<!ENTITY`` declaration is
refused before parsing (VASP never writes one; entity expansion is how billion
laughs and XXE work). A file name that is a broken symlink, a symlink loop, a
directory or a special file is refused with that reason, unless a readable file of
the same suffix stands for it.

Identifiers: ``Task.external_id`` is ``vasp:<directory relative to its root>#<hash>``
where the hash is the first 12 hex digits of the SHA-256 of the uncompressed file
(for several files: of their SHA-256s in order), so reading the same files again
gives the same ids, a changed file a new task, and compression does not matter.
A VASP directory names no material: the bundle's material ``external_id`` is ``""``
and the tasks' ``material_rule`` None, for the grouping step
(:mod:`crossfid.ingest.grouping`) to assign one, unless ``material_id`` is given
(then that id, with ``material_rule = "source"``). ``Bundle.raw`` is the uncompressed
file (format ``vasprun.xml`` or ``vaspout.h5``); a directory read from several files
stores a deterministic uncompressed tar of them (format ``vasprun.xml.tar``).

Reference entry: for a relaxation whose last file is complete, ionically converged
(``Vasprun.converged_ionic``) and whose last step is SCF-converged (or, from a
vaspout.h5, not known to be unconverged), the last frame's energy per atom
(``e_0_energy``, as the frames) at the task's fidelity, with ``task_external_id`` set.
"""

from __future__ import annotations

import bz2
import errno
import io
import logging
import lzma
import math
import os
import re
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossfid.errors import InputError
from crossfid.hashing import sha256_bytes, sha256_text
from crossfid.ingest.fidelity import Classification, classify_incar
from crossfid.ingest.records import (
    Bundle,
    Frame,
    Material,
    RawDocument,
    RecordError,
    ReferenceEntry,
    Refusal,
    Task,
    stress_from_vasp_kbar,
)
from crossfid.ingest.sourceio import DecompressedSizeError, InputLimitError, Limits

logger = logging.getLogger(__name__)

__all__ = [
    "LOOKED_FOR",
    "find_calculations",
    "read_vasp_dir",
    "read_vasp_dirs",
    "sigma0_energy",
    "vaspout_incar",
    "vasprun_files",
]

COMPRESSIONS = (".gz", ".bz2", ".xz", ".lzma")
_NAMES = {
    "vasprun": re.compile(r"^vasprun\.xml(?:\.(?P<suffix>[A-Za-z0-9_-]+))?$"),
    "vaspout": re.compile(r"^vaspout\.h5(?:\.(?P<suffix>[A-Za-z0-9_-]+))?$"),
}
#: what a calculation directory must hold (the wording of the error for a root without one)
LOOKED_FOR = "vasprun.xml[.gz|.bz2|.xz], vasprun.xml.relax1… (custodian's suffixes), vaspout.h5[.gz|.bz2|.xz]"
_DEFAULT_NELM = 60  # VASP's default
_OUTCAR_ENERGY_TOLERANCE = 1e-4  # eV
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ENERGY_QUANTITY = "e_0_energy"


# --------------------------------------------------------------------------- discovery


def _split_name(name: str) -> tuple[str, str, str] | None:
    """``vasprun.xml.relax1.gz`` → (``vasprun``, ``relax1``, ``.gz``); None for other files."""
    stem, compression = name, ""
    for ext in COMPRESSIONS:
        if name.lower().endswith(ext):
            stem, compression = name[: -len(ext)], ext
            break
    for kind, pattern in _NAMES.items():
        match = pattern.match(stem)
        if match is not None:
            return kind, match.group("suffix") or "", compression
    return None


def _natural_key(suffix: str) -> tuple:
    # the bare vasprun.xml last: custodian renames finished runs to .relax1, .relax2, ...
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", suffix) if p)
    return (1,) if not suffix else (0, parts)


def vasprun_files(directory: Path) -> list[Path]:
    """The calculation files of one directory in suffix order: per suffix one file, a vasprun.xml
    (uncompressed preferred) before a vaspout.h5."""
    return _vasprun_entries(directory)[0]


def _vasprun_entries(directory: Path) -> tuple[list[Path], list[Refusal]]:
    """(usable calculation files in suffix order, refusals of calculation file names that cannot be read).

    A name that is a broken symlink, a symlink loop, a directory or a special file
    (FIFO, device) is refused when no readable file stands for the same suffix.
    """
    by_suffix: dict[str, tuple[tuple[int, int], Path]] = {}
    unusable: dict[str, list[Path]] = {}
    for entry in sorted(Path(directory).iterdir()):
        parts = _split_name(entry.name)
        if parts is None:
            continue
        kind, suffix, compression = parts
        if not entry.is_file():
            unusable.setdefault(suffix, []).append(entry)
            continue
        rank = (kind != "vasprun", ("", *COMPRESSIONS).index(compression))
        if suffix not in by_suffix or rank < by_suffix[suffix][0]:
            by_suffix[suffix] = (rank, entry)
    files = [by_suffix[s][1] for s in sorted(by_suffix, key=_natural_key)]
    refusals = [
        Refusal(str(entry), _unusable_reason(entry))
        for suffix in sorted(unusable, key=_natural_key)
        if suffix not in by_suffix
        for entry in unusable[suffix]
    ]
    return files, refusals


def _unusable_reason(entry: Path) -> str:
    if entry.is_symlink():
        try:
            target = os.readlink(entry)
        except OSError:
            target = "?"
        try:
            entry.stat()
        except OSError as exc:
            why = "a symlink loop" if exc.errno == errno.ELOOP else "the target does not exist"
            return f"broken symlink: {entry.name} -> {target} ({why}); nothing to read"
    if entry.is_dir():
        return f"{entry.name} is a directory, not a VASP output file"
    return f"{entry.name} is not a regular file (a FIFO, socket or device); not read"


def find_calculations(roots: Sequence[Path]) -> list[Path]:
    """Every directory under ``roots`` (including the roots) that holds a vasprun.xml or vaspout.h5, sorted,
    without repeats.

    A root may also be such a file, standing for its directory. A root holding none raises
    :class:`InputError` naming the files looked for.
    """
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        if root.is_file():
            if _split_name(root.name) is None:
                raise InputError(f"{root} is neither a directory nor a VASP output file (looked for {LOOKED_FOR})")
            found.add(root.parent)
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"no such directory: {root}")
        had = False
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            if any(_split_name(name) is not None for name in filenames):
                found.add(Path(dirpath))
                had = True
        if not had:
            raise InputError(f"no VASP calculation in {root}: looked for {LOOKED_FOR} in it and in its subdirectories")
    return sorted(found)


# --------------------------------------------------------------------------- reading one file


def _decompressor(path: Path) -> Callable[[], Any] | None:
    ext = path.suffix.lower()
    if ext == ".gz":
        return lambda: zlib.decompressobj(wbits=zlib.MAX_WBITS | 32)
    if ext == ".bz2":
        return bz2.BZ2Decompressor
    if ext in (".xz", ".lzma"):
        return lzma.LZMADecompressor
    return None


_DECOMPRESSION_ERRORS = (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError)
_OUTPUT_PIECE = 1 << 20  # most bytes one decompressor call may return (a bomb never expands at once)


def _decompress(decompressor: Any, data: bytes) -> Iterator[bytes]:
    """Everything ``data`` decompresses to, in pieces of at most 1 MiB."""
    if hasattr(decompressor, "unconsumed_tail"):  # zlib
        while True:
            yield decompressor.decompress(data, _OUTPUT_PIECE)
            data = decompressor.unconsumed_tail
            if decompressor.eof or not data:
                return
    yield decompressor.decompress(data, _OUTPUT_PIECE)
    while not decompressor.eof and not decompressor.needs_input:
        yield decompressor.decompress(b"", _OUTPUT_PIECE)


def _read_uncompressed(
    path: Path, cap: int | None = None, chunk: int = 1 << 16, *, keep: bool = True
) -> tuple[bytes, bool]:
    """The uncompressed bytes of ``path`` and whether the compressed stream was cut short or corrupt.

    A damaged stream yields what could be decompressed before the damage: gzip is
    replayed in small pieces from a copy of the decompressor taken before the failing
    chunk, so almost nothing before the damage is lost (bz2/xz lose at most one chunk).
    The file is read and decompressed piece by piece; more than ``cap`` bytes
    (default ``CROSSFID_MAX_DECOMPRESSED_BYTES``) raise :class:`DecompressedSizeError`
    as soon as the count passes it, also for an uncompressed file (checked by its size).
    ``keep=False`` only counts (and returns no bytes).
    """
    cap = Limits.from_env().max_decompressed_bytes if cap is None else cap
    make = _decompressor(path)
    if make is None:
        if path.stat().st_size > cap:
            raise DecompressedSizeError(cap)
        return (path.read_bytes() if keep else b""), False
    out: list[bytes] = []
    total = 0

    def take(piece: bytes) -> None:
        nonlocal total
        total += len(piece)
        if total > cap:
            raise DecompressedSizeError(cap)
        if keep:
            out.append(piece)

    with open(path, "rb") as handle:
        pending = b""
        while True:
            decompressor = make()
            while not decompressor.eof:
                piece = pending or handle.read(chunk)
                pending = b""
                if not piece:
                    return b"".join(out), True  # the compressed stream ends before its end marker
                backup = decompressor.copy() if hasattr(decompressor, "copy") else None
                try:
                    for output in _decompress(decompressor, piece):
                        take(output)
                except _DECOMPRESSION_ERRORS:
                    if backup is not None:
                        for start in range(0, len(piece), 64):
                            try:
                                for output in _decompress(backup, piece[start : start + 64]):
                                    take(output)
                            except _DECOMPRESSION_ERRORS:
                                break
                    return b"".join(out), True
            pending = decompressor.unused_data  # another compressed member may follow
            while not pending.strip(b"\0"):  # nothing, or NUL padding, up to the end of the file
                pending = handle.read(chunk)
                if not pending:
                    return b"".join(out), False


def _parse_vasprun(path: Path, content: bytes, stream_damaged: bool) -> tuple[Any, bool]:
    """(pymatgen Vasprun, XML was malformed). Raises whatever pymatgen raises for unusable files.

    pymatgen parses with lxml, which reads ahead: damage within its first block of input
    leaves no partial data at all. Such a file is parsed again cut after a complete
    ``</calculation>``: the longest such prefix that parses (found by bisection, so a long
    damaged file costs a few parses), so its complete ionic steps before the damage survive.
    """
    try:
        return _vasprun_of(path, content if stream_damaged else None)
    except Exception:
        ends = [match.end() for match in re.finditer(rb"</calculation>", content)]
        good, best = 0, None
        low, high = 1, len(ends)
        while low <= high:
            middle = (low + high) // 2
            try:
                best = _vasprun_of(path, content[: ends[middle - 1]])[0]
            except Exception:  # noqa: BLE001 - this prefix still holds the damage
                high = middle - 1
            else:
                good, low = middle, middle + 1
        if not good or best is None:
            raise
        return best, True  # the parse of the longest good prefix: every success raised ``good``


def _vasprun_of(path: Path, content: bytes | None) -> tuple[Any, bool]:
    """Parse ``path``, or ``content`` instead when given (written to a temporary file)."""
    from pymatgen.io.vasp.outputs import Vasprun

    kwargs = dict(
        parse_dos=False,
        parse_eigen=False,
        parse_projected_eigen=False,
        parse_potcar_file=False,
        exception_on_bad_xml=False,
    )
    temporary: str | None = None
    try:
        target: Path | str = path
        if content is not None:
            with tempfile.NamedTemporaryFile(suffix=".xml", delete=False) as handle:
                handle.write(content)
                temporary = target = handle.name
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            vasprun = Vasprun(target, **kwargs)
    finally:
        if temporary is not None:
            os.unlink(temporary)
    malformed = any("XML is malformed" in str(w.message) for w in caught)
    return vasprun, malformed


def _species(vasprun: Any) -> list[str]:
    """Element of each POSCAR species, in order (from the POTCAR titles, else from runs of atomic symbols)."""
    species: list[str] = []
    for titel in getattr(vasprun, "potcar_symbols", None) or []:
        tokens = titel.split()
        match = re.match(r"[A-Z][a-z]?", tokens[1] if len(tokens) > 1 else tokens[0] if tokens else "")
        if match is None:
            species = []
            break
        species.append(match.group(0))
    if species:
        return species
    for symbol in vasprun.atomic_symbols:
        if not species or species[-1] != symbol:
            species.append(symbol)
    return species


def _potcar_functional(vasprun: Any) -> str | None:
    """``PAW_PBE Fe_pv 06Sep2000`` → ``PBE``; LDA POTCARs (``PAW``, ``PAW_LDA``, ``US``) → ``LDA``."""
    symbols = getattr(vasprun, "potcar_symbols", None) or []
    if not symbols or not symbols[0].split():
        return None
    kind = symbols[0].split()[0].upper()
    if kind in ("PAW", "PAW_LDA", "US", "US_LDA"):
        return "LDA"
    if kind.startswith("PAW_PBE"):
        return "PBE"
    if kind in ("PAW_GGA", "US_GGA"):
        return "PW91"
    return kind.partition("_")[2] or kind


def _merged_parameters(vasprun: Any, incar: Mapping[str, Any]) -> dict[str, Any]:
    """VASP's full parameter set overlaid with the user's INCAR; LDAU* only from the INCAR."""
    params = {k: v for k, v in dict(getattr(vasprun, "parameters", {}) or {}).items() if not k.startswith("LDAU")}
    for key in ("GGA", "METAGGA"):
        value = params.get(key)
        if isinstance(value, str) and value.strip().upper() in ("", "--", "NONE"):
            del params[key]
    params.update(dict(incar))
    return params


def _json_safe(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


@dataclass
class _Run:
    """One parsed calculation file (a vasprun.xml, or a vaspout.h5 when ``kind == "vaspout"``)."""

    path: Path
    suffix: str
    content: bytes
    vasprun: Any  # pymatgen Vasprun or Vaspout
    incar: dict[str, Any]  # the INCAR as the user wrote it
    classification: Classification
    parameters: dict[str, Any]  # merged, for NELM/ISPIN
    complete: bool  # the file is whole (not cut off or corrupt)
    n_started: int  # ionic steps begun in the file
    kind: str = "vasprun"
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha256 = sha256_bytes(self.content)

    @property
    def group_key(self) -> tuple:
        c = self.classification
        return (c.fidelity, c.run_type, tuple(sorted((c.hubbards or {}).items())), c.task_type)


def _load(path: Path) -> _Run | Refusal:
    where = str(path)
    kind, suffix, _ = _split_name(path.name) or ("vasprun", "", "")
    try:
        content, stream_damaged = _read_uncompressed(path)
    except InputLimitError as exc:
        return Refusal(where, str(exc))
    except OSError as exc:
        return Refusal(where, f"cannot read file: {exc}")
    if kind == "vaspout":
        return _load_vaspout(path, suffix, content, stream_damaged)
    if not content.strip():
        return Refusal(where, "empty vasprun.xml" + (" (damaged compressed stream)" if stream_damaged else ""))
    declaration = next((d for d in (b"<!DOCTYPE", b"<!ENTITY") if d in content), None)
    if declaration is not None:
        return Refusal(
            where,
            f"vasprun.xml holds a {declaration.decode()} declaration: refused unparsed (VASP never writes "
            "one; entity expansion could exhaust memory (billion laughs) or read other files (XXE))",
        )
    try:
        vasprun, malformed = _parse_vasprun(path, content, stream_damaged)
    except Exception as exc:  # pymatgen raises anything from IndexError to ParseError on broken files
        if b"<modeling" not in content[:4096]:
            reason = "not a vasprun.xml (no <modeling> element)"
        elif b"</calculation>" not in content and (stream_damaged or not content.rstrip().endswith(b"</modeling>")):
            reason = "vasprun.xml is truncated before its first complete ionic step"
        else:
            reason = "unparseable vasprun.xml"
        return Refusal(where, f"{reason}: {type(exc).__name__}: {exc}")
    if not vasprun.ionic_steps:
        return Refusal(where, "vasprun.xml has no ionic step")
    incar = dict(vasprun.incar)
    parameters = _merged_parameters(vasprun, incar)
    try:
        classification = classify_incar(
            parameters, species=_species(vasprun), potcar_functional=_potcar_functional(vasprun)
        )
    except RecordError as exc:
        return Refusal(where, str(exc))
    complete = not stream_damaged and not malformed and content.rstrip().endswith(b"</modeling>")
    return _Run(
        path=path,
        suffix=suffix,
        content=content,
        vasprun=vasprun,
        incar=incar,
        classification=classification,
        parameters=parameters,
        complete=complete,
        n_started=content.count(b"<calculation>"),
    )


def vaspout_incar(incar: Mapping[str, Any]) -> dict[str, Any]:
    """The INCAR of a vaspout.h5 with its logical tags as booleans.

    VASP writes logical tags into vaspout.h5 as integers (``LHFCALC = 1``); a tag that
    pymatgen's table of INCAR tag types (``Incar.INCAR_PARAMS``) calls ``bool`` and whose
    value is 0 or 1 becomes False or True. Other values are kept.
    """
    from pymatgen.io.vasp.inputs import Incar

    out: dict[str, Any] = {}
    for key, value in incar.items():
        kind = str(Incar.INCAR_PARAMS.get(str(key).upper(), {}).get("type", ""))
        is_flag = isinstance(value, int | np.integer) and not isinstance(value, bool) and value in (0, 1)
        out[str(key)] = bool(value) if is_flag and "bool" in kind.split(" | ") else value
    return out


def _parse_vaspout(path: Path, content: bytes) -> tuple[Any, np.ndarray | None]:
    """(pymatgen Vaspout, stress of every ionic step in kBar or None). Raises what pymatgen or h5py raise.

    ``content`` is the uncompressed file; a compressed ``path`` is parsed from a temporary copy of it.
    """
    import h5py
    from pymatgen.io.vasp.outputs import Vaspout

    def parse(name: str) -> tuple[Any, np.ndarray | None]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vaspout = Vaspout(name, parse_dos=False, parse_eigen=False, parse_projected_eigen=False)
        with h5py.File(name, "r") as h5:
            dataset = h5.get("intermediate/ion_dynamics/stress")
            return vaspout, None if dataset is None else np.asarray(dataset, dtype=float)

    if _decompressor(path) is None:
        return parse(str(path))
    with tempfile.NamedTemporaryFile(suffix=".h5") as handle:  # Vaspout and h5py read a named, uncompressed file
        handle.write(content)
        handle.flush()
        return parse(handle.name)


def _load_vaspout(path: Path, suffix: str, content: bytes, stream_damaged: bool) -> _Run | Refusal:
    where = str(path)
    if stream_damaged:
        return Refusal(where, "vaspout.h5 is truncated or its compressed stream is damaged (HDF5 is read whole)")
    if not content:
        return Refusal(where, "empty vaspout.h5")
    if not content.startswith(_HDF5_SIGNATURE):
        return Refusal(where, "not a vaspout.h5 (no HDF5 signature)")
    try:
        vaspout, stress = _parse_vaspout(path, content)
    except ImportError as exc:
        return Refusal(where, f"cannot read vaspout.h5: {exc} (h5py is needed)")
    except Exception as exc:  # h5py and pymatgen raise OSError, KeyError, ValueError... on damaged files
        return Refusal(where, f"unreadable vaspout.h5: {type(exc).__name__}: {exc}")
    steps = vaspout.ionic_steps
    if not steps:
        return Refusal(where, "vaspout.h5 has no ionic step")
    if stress is not None and stress.shape == (len(steps), 3, 3):
        for step, value in zip(steps, stress, strict=True):
            step.setdefault("stress", value)
    incar = vaspout_incar(dict(vaspout.incar))
    try:
        classification = classify_incar(incar, species=_species(vaspout), potcar_functional=_potcar_functional(vaspout))
    except RecordError as exc:
        return Refusal(where, str(exc))
    return _Run(
        path=path,
        suffix=suffix,
        content=content,
        vasprun=vaspout,
        incar=incar,
        classification=classification,
        parameters=incar,
        complete=True,
        n_started=len(steps),
        kind="vaspout",
    )


# --------------------------------------------------------------------------- frames, tasks, bundles


def _nelm(run: _Run) -> int:
    """NELM as VASP used it (``<parameters>``), else as the INCAR set it, else VASP's default."""
    for source in (getattr(run.vasprun, "parameters", None) or {}, run.parameters):
        try:
            return int(source["NELM"])
        except (KeyError, TypeError, ValueError):
            continue
    return _DEFAULT_NELM


def sigma0_energy(step: Mapping[str, Any]) -> float | None:
    """VASP's energy extrapolated to σ → 0 (eV) of one ionic step of pymatgen's ``ionic_steps``.

    The recipe of pymatgen's ``Vasprun.final_energy`` (pymatgen/io/vasp/outputs.py), applied to
    any step: the step's ``e_0_energy`` unless it differs by more than 1e-7 eV from
    ``round(e_fr_energy + (e_0_energy − e_fr_energy of the last electronic step), 8)``, which is
    then taken (VASP 5 writes a wrong ``e_0_energy`` per ionic step; VASP forum t=16942).
    Without electronic steps (vaspout.h5) the step's ``e_0_energy``. None when it has none.
    """
    total = step.get("e_0_energy")
    if total is None:
        return None
    electronic = step.get("electronic_steps") or []
    last = electronic[-1] if electronic else {}
    if "e_0_energy" in last and "e_fr_energy" in last and step.get("e_fr_energy") is not None:
        fixed = float(np.round(last["e_0_energy"] - last["e_fr_energy"] + step["e_fr_energy"], 8))
        if abs(float(total) - fixed) > 1e-7:
            return fixed
    return float(total)


def _step_magmoms(run: _Run, structure: Any) -> np.ndarray | None:
    """Per-atom moments (μB) of one ionic step of a vaspout.h5: the ``tot`` of pymatgen's ``magnetization``."""
    if run.kind != "vaspout" or not _collinear_spin_polarised(run.parameters):
        return None
    moments = structure.site_properties.get("magnetization")
    if moments is None or len(moments) != len(structure):
        return None
    try:
        return np.array([float(m["tot"]) for m in moments], dtype=float)
    except (KeyError, TypeError, ValueError):
        return None


def _collinear_spin_polarised(parameters: Mapping[str, Any]) -> bool:
    try:
        ispin = int(parameters.get("ISPIN", 1))
    except (TypeError, ValueError):
        return False
    return ispin == 2 and parameters.get("LNONCOLLINEAR") is not True and parameters.get("LSORBIT") is not True


def _frames(run: _Run, first_step: int) -> tuple[list[Frame], list[Refusal]]:
    """The run's ionic steps as frames numbered from ``first_step``, and refusals for steps that are not usable."""
    frames: list[Frame] = []
    refusals: list[Refusal] = []
    nelm = _nelm(run)
    steps = run.vasprun.ionic_steps
    for k, step in enumerate(steps):
        where = f"{run.path} ionic step {k}"
        structure = step.get("structure")
        energy = sigma0_energy(step)
        if structure is None:
            refusals.append(Refusal(where, "ionic step has no structure"))
            continue
        if energy is None:
            refusals.append(Refusal(where, "ionic step has no energy extrapolated to σ → 0 (e_0_energy)"))
            continue
        n_electronic = len(step.get("electronic_steps") or []) if run.kind == "vasprun" else None
        stress = step.get("stress")
        frames.append(
            Frame.from_structure(
                structure,
                first_step + k,
                energy,
                forces=None if step.get("forces") is None else np.asarray(step["forces"], dtype=float),
                stress=None if stress is None else stress_from_vasp_kbar(stress),
                magmoms=_step_magmoms(run, structure),
                n_electronic_steps=n_electronic,
                scf_converged=(n_electronic < nelm) if n_electronic else None,
            )
        )
    lost = run.n_started - len(steps)
    if lost > 0:
        first, last = len(steps), len(steps) + lost - 1
        label = f"ionic step {first}" if lost == 1 else f"ionic steps {first}-{last}"
        why = "is incomplete" if lost == 1 else "are incomplete or unreadable"
        refusals.append(
            Refusal(f"{run.path} {label}", f"vasprun.xml is truncated or malformed: {label} {why} and dropped")
        )
    return frames, refusals


def _outcar_for(run: _Run) -> Path | None:
    name = f"OUTCAR.{run.suffix}" if run.suffix else "OUTCAR"
    for ext in ("", *COMPRESSIONS):
        candidate = run.path.parent / (name + ext)
        if candidate.is_file():
            return candidate
    return None


def _check_size(path: Path) -> None:
    """Raise :class:`DecompressedSizeError` when ``path`` (decompressed) is larger than the cap; streams to count."""
    _read_uncompressed(path, keep=False)


def _final_magmoms(run: _Run, frame: Frame) -> np.ndarray | None:
    """Moments of the final ionic step of a vasprun.xml run from the matching OUTCAR (see the module doc)."""
    free_energy = run.vasprun.ionic_steps[-1].get("e_fr_energy")
    if run.kind != "vasprun" or not run.complete or free_energy is None:
        return None
    if not _collinear_spin_polarised(run.parameters):
        return None
    path = _outcar_for(run)
    if path is None:
        return None
    _check_size(path)  # pymatgen reads the whole OUTCAR into memory: a bomb must not get there
    from pymatgen.io.vasp.outputs import Outcar

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            outcar = Outcar(path)
    except Exception as exc:  # an OUTCAR pymatgen cannot read only costs the moments
        logger.warning("%s: cannot read OUTCAR for magnetic moments (%s: %s)", path, type(exc).__name__, exc)
        return None
    rows = outcar.magnetization
    if len(rows) != frame.n_atoms or outcar.final_fr_energy is None:
        return None
    if abs(float(outcar.final_fr_energy) - float(free_energy)) > _OUTCAR_ENERGY_TOLERANCE:
        logger.warning("%s: final energy differs from %s, magnetic moments not used", path, run.path)
        return None
    try:
        return np.array([float(row["tot"]) for row in rows], dtype=float)
    except (KeyError, TypeError, ValueError):  # non-collinear Magmom objects or odd tables
        return None


def _task_hash(runs: Sequence[_Run]) -> str:
    if len(runs) == 1:
        return runs[0].sha256[:12]
    return sha256_text("\n".join(r.sha256 for r in runs))[:12]


def _relative(directory: Path, root: Path) -> str:
    try:
        rel = directory.relative_to(root).as_posix()
    except ValueError:
        rel = directory.as_posix()
    if rel in ("", "."):
        rel = directory.resolve().name or directory.resolve().as_posix()
    return rel


def _uncompressed_name(path: Path) -> str:
    kind, suffix, _ = _split_name(path.name) or ("vasprun", "", "")
    base = "vaspout.h5" if kind == "vaspout" else "vasprun.xml"
    return f"{base}.{suffix}" if suffix else base


_RAW_FORMATS = {"vasprun": "vasprun.xml", "vaspout": "vaspout.h5"}


def _raw_document(directory: Path, runs: Sequence[_Run]) -> RawDocument:
    kinds = {run.kind for run in runs}
    if len(runs) == 1:
        return RawDocument(content=runs[0].content, format=_RAW_FORMATS[runs[0].kind], location=str(runs[0].path))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for run in runs:
            info = tarfile.TarInfo(_uncompressed_name(run.path))
            info.size, info.mtime, info.mode = len(run.content), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(run.content))
    fmt = f"{_RAW_FORMATS[kinds.pop()]}.tar" if len(kinds) == 1 else "vasp.tar"
    return RawDocument(content=buffer.getvalue(), format=fmt, location=str(directory))


def _plain_structure(structure: Any) -> dict[str, Any]:
    """``Structure.as_dict()`` without site properties (vaspout.h5 steps carry per-site magnetisation)."""
    plain = structure.copy()
    for name in list(plain.site_properties):
        plain.remove_site_property(name)
    return plain.as_dict()


def _build_task(
    runs: Sequence[_Run], rel: str, material_rule: str | None
) -> tuple[Task, ReferenceEntry | None, list[Refusal]]:
    refusals: list[Refusal] = []
    frames: list[Frame] = []
    step = 0
    for run in runs:
        run_frames, run_refusals = _frames(run, step)
        frames += run_frames
        refusals += run_refusals
        step += max(run.n_started, len(run.vasprun.ionic_steps))
    last_run = runs[-1]
    c = last_run.classification
    external_id = f"vasp:{rel}#{_task_hash(runs)}"
    last_step_kept = bool(frames) and frames[-1].ionic_step == step - 1
    if last_step_kept:
        try:
            magmoms = _final_magmoms(last_run, frames[-1])
        except InputLimitError as exc:
            refusals.append(Refusal(str(_outcar_for(last_run)), f"{exc}; magnetic moments not read"))
            magmoms = None
        if magmoms is not None:
            frames[-1].magmoms = magmoms
    version = getattr(last_run.vasprun, "vasp_version", None)
    task = Task(
        external_id=external_id,
        fidelity=c.fidelity,
        run_type=c.run_type,
        task_type=c.task_type,  # type: ignore[arg-type]
        frames=frames,
        input_parameters=_json_safe(last_run.incar),
        hubbards=c.hubbards,
        code="VASP",
        code_version=None if version is None else str(version).strip(),
        energy_quantity=_ENERGY_QUANTITY,
        material_rule=material_rule,
    )
    reference = None
    final = frames[-1] if frames else None
    # a vaspout.h5 has no electronic steps: its SCF convergence is unknown (None), not refused
    scf_ok = final is not None and (
        final.scf_converged if last_run.kind == "vasprun" else final.scf_converged is not False
    )
    if c.task_type == "relax" and last_run.complete and last_step_kept and scf_ok:
        try:
            converged = bool(last_run.vasprun.converged_ionic)
        except Exception:  # pymatgen's property on odd parameter sets
            converged = False
        if converged:
            reference = ReferenceEntry(
                fidelity=c.fidelity,
                energy_per_atom=float(final.energy) / final.n_atoms,
                n_atoms=final.n_atoms,
                structure=_plain_structure(last_run.vasprun.ionic_steps[-1]["structure"]),
                task_external_id=external_id,
                energy_quantity=_ENERGY_QUANTITY,
            )
    return task, reference, refusals


def read_vasp_dir(
    directory: Path, *, root: Path | None = None, material_id: str | None = None
) -> Iterator[Bundle | Refusal]:
    """Records of one calculation directory: its refusals, then (if anything survived) one Bundle.

    ``root`` is what the task ids are made relative to (default: the directory's parent).
    Without ``material_id`` the bundle's material id is ``""`` (for the grouping step).
    """
    directory = Path(directory)
    root = directory.parent if root is None else Path(root)
    rel = _relative(directory, root)
    runs: list[_Run] = []
    material: Material | None = None
    try:
        files, unusable = _vasprun_entries(directory)
    except OSError as exc:
        yield Refusal(str(directory), f"cannot list the directory: {exc}")
        return
    yield from unusable
    for path in files:
        loaded = _load(path)
        if isinstance(loaded, Refusal):
            yield loaded
            continue
        numbers = [site.specie.Z for site in loaded.vasprun.initial_structure]
        candidate = Material.from_atomic_numbers(material_id or "", numbers)
        if material is None:
            material = candidate
        elif candidate.formula != material.formula:
            yield Refusal(
                str(path), f"composition {candidate.formula} differs from {material.formula} of {runs[0].path.name}"
            )
            continue
        runs.append(loaded)
    if material is None or not runs:
        return
    groups: list[list[_Run]] = []
    for run in runs:
        if groups and groups[-1][-1].group_key == run.group_key:
            groups[-1].append(run)
        else:
            groups.append([run])
    tasks: list[Task] = []
    references: dict[str, ReferenceEntry] = {}
    for group in groups:
        task, reference, refusals = _build_task(group, rel, "source" if material_id else None)
        yield from refusals
        if not task.frames:
            continue
        tasks.append(task)
        if reference is not None:
            references[reference.fidelity] = reference  # the last relaxation at a fidelity wins
    if not tasks:
        return
    yield Bundle(
        material=material,
        location=str(directory),
        tasks=tasks,
        references=list(references.values()),
        raw=_raw_document(directory, runs),
    )


def read_vasp_dirs(roots: Sequence[Path], *, material_id: str | None = None) -> Iterator[Bundle | Refusal]:
    """Records of every calculation directory under ``roots`` (see the module doc).

    Each directory is read once, relative to the first root (in the given order) that contains it.
    ``material_id`` puts every bundle under that one material (rule ``source``); without it the
    bundles' material id is ``""``, for :func:`crossfid.ingest.grouping.assign_materials`.
    """
    roots = [Path(r) for r in roots]
    bases = [r.parent if r.is_file() else r for r in roots]
    for directory in find_calculations(roots):
        root = next((b for b in bases if directory == b or b in directory.parents), directory.parent)
        try:
            yield from read_vasp_dir(directory, root=root, material_id=material_id)
        except Exception as exc:  # noqa: BLE001 - one unreadable directory never ends the run
            logger.warning("%s: %s: %s", directory, type(exc).__name__, exc)
            yield Refusal(str(directory), f"cannot read the calculation: {type(exc).__name__}: {exc}")

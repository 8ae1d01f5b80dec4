"""Helpers shared by the JSON-based sources (MPtrj, MatPES, ASE): streamed JSON reading
of plain or gzip files with precise refusals, and pymatgen-structure parsing into arrays.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from crossfid.ingest.records import RecordError, Refusal

# --------------------------------------------------------------------------- shared helpers


@cache
def _element_numbers() -> dict[str, int]:
    from pymatgen.core.periodic_table import Element

    return {element.symbol: int(element.Z) for element in Element}


def structure_arrays(structure: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lattice (3, 3), atomic numbers (n,), fractional coordinates (n, 3)) of a pymatgen ``Structure`` dict.

    Parsed directly (much faster than ``Structure.from_dict`` and stricter: pymatgen
    would turn an unknown symbol into a dummy species). Raises :class:`RecordError`
    for a malformed dict, an unknown element, a disordered site or no sites.
    """
    if not isinstance(structure, Mapping):
        raise RecordError("structure is not a pymatgen Structure object")
    try:
        matrix = structure["lattice"]["matrix"]
    except (KeyError, TypeError) as exc:
        raise RecordError("structure has no lattice matrix") from exc
    try:
        lattice = np.asarray(matrix, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RecordError("lattice matrix is not numeric") from exc
    sites = structure.get("sites")
    if not isinstance(sites, list):
        raise RecordError("structure has no list of sites")
    if not sites:
        raise RecordError("structure has no sites (empty structure)")
    symbols = _element_numbers()
    numbers = np.empty(len(sites), dtype=np.int16)
    abc: list[Any] = []
    xyz: list[Any] = []
    for i, site in enumerate(sites):
        try:
            species = site["species"]
        except (KeyError, TypeError) as exc:
            raise RecordError(f"site {i} has no species") from exc
        if not isinstance(species, list) or len(species) != 1:
            raise RecordError(f"site {i} is disordered ({len(species) if isinstance(species, list) else 0} species)")
        specie = species[0]
        try:
            symbol = specie["element"]
            occupancy = float(specie.get("occu", 1.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise RecordError(f"site {i} has a malformed species entry") from exc
        if abs(occupancy - 1.0) > 1e-6:
            raise RecordError(f"site {i} is partially occupied (occupancy {occupancy:g})")
        z = symbols.get(symbol) if isinstance(symbol, str) else None
        if z is None:
            raise RecordError(f"unknown element symbol {symbol!r} at site {i}")
        numbers[i] = z
        if "abc" in site and site["abc"] is not None:
            abc.append(site["abc"])
        elif "xyz" in site and site["xyz"] is not None:
            xyz.append((i, site["xyz"]))
        else:
            raise RecordError(f"site {i} has no coordinates")
    try:
        if not xyz:
            frac = np.asarray(abc, dtype=float)
        else:
            frac = np.empty((len(sites), 3))
            cart = {i: np.asarray(x, dtype=float) for i, x in xyz}
            inverse = np.linalg.inv(lattice)
            fractional_iter = iter(abc)
            for i in range(len(sites)):
                frac[i] = cart[i] @ inverse if i in cart else np.asarray(next(fractional_iter), dtype=float)
    except np.linalg.LinAlgError as exc:
        raise RecordError("lattice is singular (zero-volume cell): cannot convert Cartesian coordinates") from exc
    except (TypeError, ValueError) as exc:
        raise RecordError("site coordinates are not numeric 3-vectors") from exc
    return lattice, numbers, frac


def reduced_composition(numbers: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Hashable reduced composition: ((Z, count / gcd), ...) sorted by Z."""
    elements, counts = np.unique(np.asarray(numbers), return_counts=True)
    divisor = int(np.gcd.reduce(counts)) if counts.size else 1
    return tuple((int(z), int(c) // divisor) for z, c in zip(elements, counts, strict=True))


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple) and len(value) == 0)


def to_float(value: Any, what: str) -> float:
    """float(value), including the ``"NaN"``/``"Infinity"`` strings of a quoted non-finite token."""
    if isinstance(value, bool):
        raise RecordError(f"{what} is not a number: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not a number: {value!r}") from exc


def to_optional_float(value: Any, what: str) -> float | None:
    return None if value is None else to_float(value, what)


def to_array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise RecordError(f"{what} is not a numeric array") from exc


# ---- JSON streaming

_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 16  # small reads: a truncated gzip loses at most this much before the failure
_WHITESPACE = b" \t\r\n"


@contextlib.contextmanager
def open_decompressed(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """The file's bytes, gunzipped when it starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as raw:
        magic = raw.read(2)
        raw.seek(0)
        if magic == _GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw


def first_json_byte(path: str | os.PathLike[str]) -> bytes | None:
    """First non-whitespace byte of the (decompressed) file, None for an empty file."""
    with open_decompressed(path) as stream:
        while chunk := stream.read(1 << 16):
            stripped = chunk.lstrip(_WHITESPACE)
            if stripped.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
                stripped = stripped[3:].lstrip(_WHITESPACE)
            if stripped:
                return stripped[:1]
    return None


class _NonFiniteQuotingReader:
    """A binary reader that quotes bare ``NaN``/``Infinity``/``-Infinity`` JSON tokens.

    Python's ``json`` writes these (invalid JSON) tokens for non-finite floats; the C
    parser of ``ijson`` refuses them and would end the stream. A token counts as a
    value when it follows ``:``, ``,`` or ``[`` (after optional whitespace) and is
    followed by ``,``, ``]`` or ``}``: so it is never rewritten inside an ordinary
    string (a string containing e.g. ``": NaN,"`` would be, and the file would then
    be refused as malformed JSON from there on, never silently altered).
    """

    _TOKEN = re.compile(rb"([:,\[][ \t\r\n]*)(-?(?:NaN|Infinity))(?=[ \t\r\n]*[,\]}])")
    _MARGIN = 4096  # bytes kept back so that a token and its context are never split

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._pending = b""  # read, not yet scanned
        self._out = bytearray()  # scanned, not yet returned
        self._eof = False

    def _fill(self, size: int) -> None:
        while len(self._out) < size and not self._eof:
            chunk = self._stream.read(_CHUNK)
            self._eof = not chunk
            buffer = self._pending + chunk
            limit = len(buffer) if self._eof else max(0, len(buffer) - self._MARGIN)
            if b"NaN" not in buffer and b"Infinity" not in buffer:
                self._out += buffer[:limit]
                self._pending = buffer[limit:]
                continue
            position = 0
            for match in self._TOKEN.finditer(buffer):
                if match.start() >= limit:
                    break
                self._out += buffer[position : match.start(2)]
                self._out += b'"' + match.group(2) + b'"'
                position = match.end()
            end = max(position, limit)
            self._out += buffer[position:end]
            self._pending = buffer[end:]

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            self._fill(math.inf)  # type: ignore[arg-type]
            size = len(self._out)
        else:
            self._fill(size)
        data = bytes(self._out[:size])
        del self._out[:size]
        return data


def stream_problem(exc: BaseException) -> str:
    """A reason a person understands for a failure while reading a (possibly gzipped) JSON stream."""
    import ijson

    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    if isinstance(exc, IsADirectoryError):
        return f"not a file but a directory: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    if isinstance(exc, EOFError):
        return "file is truncated: the gzip stream ends before its end-of-stream marker"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, ijson.IncompleteJSONError) and "premature EOF" in str(exc):
        return "file is truncated: the JSON ends in the middle of a document"
    if isinstance(exc, ijson.JSONError):
        detail = " ".join(str(exc).split())
        return f"malformed JSON ({detail[:300]})"
    if isinstance(exc, UnicodeDecodeError):
        return f"file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc}"
    return f"cannot read file: {type(exc).__name__}: {exc}"


def iter_json_stream(path: str | os.PathLike[str], top: str) -> Iterator[tuple[Any, Any] | Refusal]:
    """Stream the items of a top-level JSON ``"object"`` (key, value) or ``"array"`` (index, value).

    Yields ``(key_or_index, value)`` pairs; a read or parse failure yields one final
    :class:`Refusal` located after the last good item, and the stream ends.
    """
    import ijson

    name = Path(path).name
    last: Any = None
    count = 0
    try:
        with open_decompressed(path) as stream:
            reader = _NonFiniteQuotingReader(stream)
            if top == "object":
                items = ijson.kvitems(reader, "", use_float=True)
            else:
                items = enumerate(ijson.items(reader, "item", use_float=True))
            for key, value in items:
                last = key
                count += 1
                yield key, value
    except Exception as exc:  # noqa: BLE001 - the rest of the stream is lost; say why and where
        where = f"{name}#item {count}"
        if top == "object":
            where = f"{name}#after {last}" if count else f"{name}#start"
        reason = stream_problem(exc)
        closing = "}" if top == "object" else "]"
        if reason.startswith("malformed JSON") and _ends_abruptly(path, closing):
            reason = f"{reason}; the file does not end with {closing!r}, so it may be truncated"
        yield Refusal(where, f"{reason}; {count} item(s) were read before it")


def _ends_abruptly(path: str | os.PathLike[str], closing: str) -> bool:
    """Whether an uncompressed JSON file does not end with the closing bracket of its top level.

    (The C parser reports a file cut inside a number or a string as a lexical error,
    not as a premature end.) Gzip files are not decompressed again to look.
    """
    try:
        with open(path, "rb") as raw:
            if raw.read(2) == _GZIP_MAGIC:
                return False
            size = raw.seek(0, os.SEEK_END)
            raw.seek(max(0, size - 4096))
            tail = raw.read().rstrip(_WHITESPACE)
    except OSError:
        return False
    return not tail.endswith(closing.encode())


def first_byte_or_refusal(path: Path) -> bytes | Refusal:
    """The first non-blank byte of a JSON file, or the refusal of the whole file (unreadable or empty)."""
    try:
        first = first_json_byte(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a refusal of the file
        return Refusal(path.name, stream_problem(exc))
    if first is None:
        return Refusal(path.name, "file is empty (no JSON document)")
    return first

"""Helpers shared by the file sources: input limits, capped decompression, JSON split into
records at the byte level and parsed record by record (with precise refusals), and
pymatgen-structure parsing into arrays.

Limits (docs/ingestion.md, "Limits"; environment variables read when a file is opened):

* ``CROSSFID_MAX_JSON_DEPTH`` (default 64): a JSON record nested deeper is refused unparsed;
* ``CROSSFID_MAX_RECORD_BYTES`` (default 256 MiB): a larger JSON record (MPtrj material,
  MatPES/MP document, JSON line) or extxyz frame is refused without being held in memory;
* ``CROSSFID_MAX_DECOMPRESSED_BYTES`` (default 8 GiB): a compressed input (gzip, bz2, xz)
  that expands beyond it is refused from that point (a decompression bomb).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from crossfid.errors import InputError
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
    except (TypeError, ValueError, OverflowError) as exc:
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
        except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
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
    except (TypeError, ValueError, OverflowError) as exc:
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
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"{what} is not a number: {value!r}") from exc


def to_optional_float(value: Any, what: str) -> float | None:
    return None if value is None else to_float(value, what)


def to_array(value: Any, what: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"{what} is not a numeric array") from exc


# --------------------------------------------------------------------------- limits

#: JSON nesting deeper than this (containers inside containers, the top level counting as 1) is refused
DEFAULT_MAX_JSON_DEPTH = 64
#: one JSON record (an MPtrj material, a MatPES document, an MP task document, an extxyz frame)
DEFAULT_MAX_RECORD_BYTES = 256 * 2**20
#: what one compressed input (gzip, bz2, xz) may expand to; real vasprun.xml files reach a few GB
DEFAULT_MAX_DECOMPRESSED_BYTES = 8 * 2**30

ENV_MAX_JSON_DEPTH = "CROSSFID_MAX_JSON_DEPTH"
ENV_MAX_RECORD_BYTES = "CROSSFID_MAX_RECORD_BYTES"
ENV_MAX_DECOMPRESSED_BYTES = "CROSSFID_MAX_DECOMPRESSED_BYTES"

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12}
_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "ki": 2**10, "mi": 2**20, "gi": 2**30})


def parse_size(text: str) -> int:
    """``"8GiB"`` → 8589934592; plain integers are bytes; k/M/G are powers of 1000, KiB/MiB/GiB of 1024."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InputError(f"not a size: {text!r} (expected e.g. 1048576, 512MiB or 8GiB)")
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


@dataclass(frozen=True)
class Limits:
    """Input limits of the file sources (docs/ingestion.md, "Limits"); read from the environment when asked."""

    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_decompressed_bytes: int = DEFAULT_MAX_DECOMPRESSED_BYTES

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """Limits from ``CROSSFID_MAX_JSON_DEPTH``, ``..._RECORD_BYTES`` and ``..._DECOMPRESSED_BYTES``.

        Raises ``ValueError`` (naming the variable) for a value that is not a positive size.
        """
        env = os.environ if environ is None else environ
        values: dict[str, int] = {}
        for name, variable, parse in (
            ("max_json_depth", ENV_MAX_JSON_DEPTH, int),
            ("max_record_bytes", ENV_MAX_RECORD_BYTES, parse_size),
            ("max_decompressed_bytes", ENV_MAX_DECOMPRESSED_BYTES, parse_size),
        ):
            text = (env.get(variable) or "").strip()
            if not text:
                continue
            try:
                value = parse(text)
            except ValueError as exc:
                raise InputError(f"{variable}: {exc}") from exc
            if value < 1:
                raise InputError(f"{variable} must be positive, not {text!r}")
            values[name] = value
        return cls(**values)


class InputLimitError(Exception):
    """An input exceeds one of the :class:`Limits`; ``str(error)`` is the reason shown in quarantine."""


class DecompressedSizeError(InputLimitError):
    def __init__(self, cap: int) -> None:
        super().__init__(
            f"decompressed size exceeds the cap of {format_size(cap)} ({cap} bytes; "
            f"{ENV_MAX_DECOMPRESSED_BYTES} raises it): possible decompression bomb"
        )
        self.cap = cap


def depth_reason(limit: int) -> str:
    return f"JSON nesting is deeper than the limit of {limit} levels ({ENV_MAX_JSON_DEPTH}); not parsed"


def record_size_reason(limit: int, what: str = "record") -> str:
    return (
        f"{what} is larger than the limit of {format_size(limit)} ({limit} bytes; "
        f"{ENV_MAX_RECORD_BYTES} raises it); not parsed"
    )


# --------------------------------------------------------------------------- decompression

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_CHUNK = 1 << 18  # bytes per read of the JSON scanner (a truncated gzip loses at most this much)
_WHITESPACE = b" \t\r\n"


class _CappedReader:
    """A decompressing stream that counts what it returns and raises :class:`DecompressedSizeError` past the cap.

    ``read`` hands out what was decompressed before a damaged part of the stream and
    raises the error on the next call, so a truncated file loses nothing before the damage.
    """

    def __init__(self, inner: Any, cap: int) -> None:
        self._inner = inner
        self._cap = cap
        self._error: BaseException | None = None
        self.total = 0

    def _count(self, data: bytes) -> bytes:
        self.total += len(data)
        if self.total > self._cap:
            raise DecompressedSizeError(self._cap)
        return data

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if size is None or size < 0:
            size = self._cap + 1 - self.total  # reading "everything" still stops at the cap
        parts: list[bytes] = []
        got = 0
        while got < size:
            try:
                data = self._inner.read1(min(size - got, 1 << 20))  # one decompressor step at a time
            except Exception as exc:  # noqa: BLE001 - damaged stream: return what came before, then fail
                if not parts:
                    raise
                self._error = exc
                break
            if not data:
                break
            parts.append(self._count(data))
            got += len(data)
        return b"".join(parts)

    def readline(self, size: int = -1) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        limit = self._cap + 1 - self.total if size is None or size < 0 else min(size, self._cap + 1 - self.total)
        return self._count(self._inner.readline(limit))

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def compression_of(head: bytes) -> str | None:
    """``"gzip"``, ``"bz2"`` or ``"xz"`` from a file's first bytes; None for an uncompressed file."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_BZ2_MAGIC):
        return "bz2"
    if head.startswith(_XZ_MAGIC):
        return "xz"
    return None


@contextlib.contextmanager
def open_decompressed(path: str | os.PathLike[str], limits: Limits | None = None) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed when it starts with gzip, bz2 or xz magic bytes (whatever its name).

    A compressed stream is capped at ``limits.max_decompressed_bytes``: reading past it
    raises :class:`DecompressedSizeError` (so a decompression bomb never fills memory or disk).
    """
    import bz2
    import lzma

    limits = limits or Limits.from_env()
    with open(path, "rb") as raw:
        kind = compression_of(raw.read(6))
        raw.seek(0)
        if kind is None:
            yield raw
            return
        openers = {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "bz2": bz2.BZ2File, "xz": lzma.LZMAFile}
        with openers[kind](raw) as inner:
            yield _CappedReader(inner, limits.max_decompressed_bytes)  # type: ignore[misc]


def first_json_byte(path: str | os.PathLike[str]) -> bytes | None:
    """First non-whitespace byte of the (decompressed) file, after a UTF-8 byte-order mark; None for an empty file."""
    with open_decompressed(path) as stream:
        start = True
        while chunk := stream.read(1 << 16):
            if start and chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
            start = False
            stripped = chunk.lstrip(_WHITESPACE)
            if stripped:
                return stripped[:1]
    return None


def stream_problem(exc: BaseException) -> str:
    """A reason a person understands for a failure while reading a (possibly compressed) input stream."""
    import lzma

    if isinstance(exc, InputLimitError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"file not found: {exc.filename}"
    if isinstance(exc, IsADirectoryError):
        return f"not a file but a directory: {exc.filename}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename}"
    if isinstance(exc, EOFError):
        return "file is truncated: the compressed stream ends before its end-of-stream marker"
    if isinstance(exc, gzip.BadGzipFile | zlib.error):
        return f"corrupt gzip data ({exc})"
    if isinstance(exc, lzma.LZMAError):
        return f"corrupt xz data ({exc})"
    if isinstance(exc, UnicodeDecodeError):
        return f"file is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, OSError) and "Invalid data stream" in str(exc):
        return f"corrupt bz2 data ({exc})"
    if isinstance(exc, OSError):
        return f"cannot read file: {exc}"
    return f"cannot read file: {type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- JSON scanning
#
# JSON is split into records at the byte level, before anything is parsed: a vectorised
# (numpy) scan finds the quotes and brackets of each chunk, tells the brackets inside
# strings apart (escaped quotes included), and tracks the nesting depth. Each record's
# bytes are then parsed on their own with ``json.loads`` (which also reads the bare
# NaN / Infinity tokens that Python's ``json`` writes). So a record deeper than
# ``max_json_depth`` or longer than ``max_record_bytes`` is refused without ever being
# parsed or held in memory, a malformed record is refused alone, and reading goes on
# with the next record.

_BOM = b"\xef\xbb\xbf"
_QUOTE, _BACKSLASH, _COMMA = 0x22, 0x5C, 0x2C
_OPENERS = (0x5B, 0x7B)  # [ {
_FLAGS = bytes(1 if b in b'"\\[]{},' else 0 for b in range(256))  # 1 for the bytes the scan looks at
_DELTA = np.zeros(256, dtype=np.int64)
_DELTA[[0x5B, 0x7B]] = 1
_DELTA[[0x5D, 0x7D]] = -1
_HEAD = 4096  # bytes kept of every record, also a refused one, to name it


_DEPTH_FLAGS = bytes(1 if b in b'"\\[]{}' else 0 for b in range(256))


def _significant(chunk: bytes, flags: bytes, carry: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(positions, bytes) of the ``flags`` bytes of ``chunk`` minus backslashes and escaped quotes, and
    the run of backslashes at its end. ``carry`` is the run of backslashes that ended the previous chunk.

    A quote is escaped when an odd run of backslashes precedes it (backslashes only
    occur inside strings in valid JSON, so this needs no string state).
    """
    # translate to 0/1 (C speed), read as booleans: nonzero() on a bool array is the fast path
    pos = np.flatnonzero(np.frombuffer(chunk.translate(flags), dtype=np.bool_))
    kinds = np.frombuffer(chunk, dtype=np.uint8)[pos]
    if not carry and b"\\" not in chunk:
        return pos, kinds, 0
    backslash = kinds == _BACKSLASH
    bpos = pos[backslash]
    quote_pos = pos[kinds == _QUOTE]
    escaped = np.zeros(len(quote_pos), dtype=bool)
    trailing = 0
    if len(bpos):
        new_run = np.ones(len(bpos), dtype=bool)
        new_run[1:] = np.diff(bpos) != 1
        starts = np.flatnonzero(new_run)
        run_start = bpos[starts]
        run_end = np.append(bpos[starts[1:] - 1], bpos[-1])
        length = run_end - run_start + 1 + np.where(run_start == 0, carry, 0)
        escaped = np.isin(quote_pos - 1, run_end[length % 2 == 1])
        trailing = int(length[-1]) if run_end[-1] == len(chunk) - 1 else 0
    if carry % 2 == 1 and len(quote_pos) and quote_pos[0] == 0:
        escaped[0] = True
    keep = ~backslash
    keep[np.flatnonzero(kinds == _QUOTE)[escaped]] = False
    return pos[keep], kinds[keep], trailing


def max_json_depth(data: bytes) -> int:
    """The deepest nesting of ``[``/``{`` outside strings in one JSON text (the top level counts as 1)."""
    _, kinds, _ = _significant(data, _DEPTH_FLAGS, 0)
    quote = kinds == _QUOTE
    outside = (np.cumsum(quote) & 1) == 0
    outside &= ~quote
    delta = _DELTA[kinds[outside]]
    return max(0, int(np.cumsum(delta).max())) if len(delta) else 0


@dataclass
class JsonSegment:
    """The bytes of one JSON record found by the scanner (``data`` None when refused by a limit)."""

    index: int  # 0-based, in file order
    line: int  # 1-based line of its first byte
    data: bytes | None
    head: bytes  # the first bytes (≤ 4 KiB), kept also when the record is refused
    problem: str | None = None  # why it was not kept (a limit), None when ``data`` is there


@dataclass
class JsonEnd:
    """How the scanned stream ended when it did not end cleanly."""

    problem: str
    partial: bytes | None = None  # the incomplete last record, when it was kept
    index: int = 0  # index the incomplete record would have had


class _Scanner:
    """Splits a JSON byte stream into records: the members of the top-level container (``level=1``),
    or a sequence of top-level values (``level=0``: one document, or several one after the other)."""

    def __init__(self, level: int, limits: Limits) -> None:
        self.level = level
        self.max_depth = limits.max_json_depth
        self.max_bytes = limits.max_record_bytes
        self.depth = 0
        self.in_string = False
        self.backslashes = 0  # run of backslashes at the end of the previous chunk
        self.state = "before" if level == 1 else "out"  # before / in / after (level 1); out / in (level 0)
        self.index = 0
        self.lines = 1  # line number at byte ``_counted`` of the current chunk
        self._counted = 0
        self.first_chunk = True
        self._reset_record()
        self.trailing = b""  # level 1: non-blank bytes after the top-level container

    def _reset_record(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.head = b""
        self.problem: str | None = None
        self.record_line = 0

    # ---- per chunk

    def _structure(self, chunk: bytes) -> tuple[np.ndarray, np.ndarray]:
        """Positions and bytes of the brackets and commas of ``chunk`` that are outside strings."""
        pos, kinds, self.backslashes = _significant(chunk, _FLAGS, self.backslashes)
        quote = kinds == _QUOTE
        quotes_before = np.cumsum(quote)
        outside = ((quotes_before + self.in_string) & 1) == 0
        if len(quote):
            self.in_string = bool((int(quotes_before[-1]) + self.in_string) & 1)
        outside &= ~quote
        return pos[outside], kinds[outside]

    def feed(self, chunk: bytes) -> Iterator[JsonSegment | JsonEnd]:
        if self.first_chunk:
            self.first_chunk = False
            if chunk.startswith(_BOM):
                chunk = chunk[len(_BOM) :]
        if not chunk:
            return
        pos, kinds = self._structure(chunk)
        delta = _DELTA[kinds]
        depth_after = self.depth + np.cumsum(delta)
        depth_before = depth_after - delta
        is_open = delta == 1
        events = (is_open & (depth_before == 0)) | ((delta == -1) & (depth_after <= 0))
        events |= is_open & (depth_after == self.max_depth + 1)
        if self.level == 1:
            events |= (kinds == _COMMA) & (depth_after == 1)
        index = np.flatnonzero(events)
        start = 0  # where the bytes of the current record begin in this chunk
        for i in index.tolist():
            p = int(pos[i])
            kind = int(kinds[i])
            before, after = int(depth_before[i]), int(depth_after[i])
            if after == self.max_depth + 1 and kind in _OPENERS:
                if self.state == "in" and self.problem is None:
                    self.problem = depth_reason(self.max_depth)
                    self.parts = []
                if before != 0:
                    continue
            if after < 0:  # a closing bracket without its opening one
                self.depth = after
                yield JsonEnd(f"malformed JSON: unbalanced {chr(kind)!r} at line {self._line(chunk, p)}")
                self.state = "failed"
                return
            if self.level == 1:
                if self.state == "before" and before == 0 and kind in _OPENERS:
                    self.state = "in"
                    self._reset_record()
                    start = p + 1
                    self.record_line = self._line(chunk, start)
                elif self.state == "in" and kind == _COMMA:
                    yield self._finish(chunk, start, p)
                    start = p + 1
                    self.record_line = self._line(chunk, start)
                elif self.state == "in" and after == 0:
                    segment = self._finish(chunk, start, p)
                    if segment.data is None or segment.data.strip(_WHITESPACE) or segment.index:
                        yield segment  # (a blank only member is an empty container, not a trailing comma)
                    self.state = "after"
                    start = p + 1
                elif self.state == "after":
                    self.depth = int(depth_after[-1])
                    self.trailing = chunk[p : p + 200]
                    self.state = "failed"
                    return
            else:
                if before == 0 and kind in _OPENERS:
                    if self.state == "out":
                        self._keep_junk(chunk, start, p)
                        if self.size:
                            yield self._finish(chunk, p, p)
                    self.state = "in"
                    self._reset_record()
                    start = p
                    self.record_line = self._line(chunk, p)
                elif after == 0 and self.state == "in":
                    yield self._finish(chunk, start, p + 1)
                    self.state = "out"
                    start = p + 1
        self.depth = int(depth_after[-1]) if len(depth_after) else self.depth
        if self.state == "in":
            self._keep(chunk[start:])
        elif self.state == "out":
            self._keep_junk(chunk, start, len(chunk))
        elif self.state == "after":
            rest = chunk[start:].strip(_WHITESPACE)
            if rest:
                self.trailing = rest[:200]
                self.state = "failed"
        self.lines += chunk.count(b"\n", self._counted)
        self._counted = 0

    def _line(self, chunk: bytes, p: int) -> int:
        """Line number of byte ``p`` of the current chunk (positions are asked for in increasing order)."""
        if p < self._counted:  # not expected; count from the start
            self.lines -= chunk.count(b"\n", 0, self._counted)
            self._counted = 0
        self.lines += chunk.count(b"\n", self._counted, p)
        self._counted = p
        return self.lines

    def _keep(self, piece: bytes) -> None:
        if len(self.head) < _HEAD:
            self.head += piece[: _HEAD - len(self.head)]
        self.size += len(piece)
        if self.problem is None and self.size > self.max_bytes:
            self.problem = record_size_reason(self.max_bytes)
        if self.problem is None:
            self.parts.append(piece)
        else:
            self.parts = []

    def _finish(self, chunk: bytes, start: int, end: int) -> JsonSegment:
        self._keep(chunk[start:end])
        data = None if self.problem is not None else b"".join(self.parts)
        segment = JsonSegment(self.index, self.record_line, data, self.head, self.problem)
        self.index += 1
        self._reset_record()
        return segment

    # level 0: bytes between top-level values that are not blank (a scalar, stray text) form a record too

    def _keep_junk(self, chunk: bytes, start: int, end: int) -> None:
        piece = chunk[start:end]
        if self.size == 0:
            stripped = piece.lstrip(_WHITESPACE)
            if not stripped:
                return
            self.record_line = self._line(chunk, end - len(stripped))
            piece = stripped
        self._keep(piece)

    def close(self) -> Iterator[JsonSegment | JsonEnd]:
        if self.state == "failed":
            if self.trailing:
                what = "object" if self.level == 1 else "value"
                yield JsonEnd(f"unexpected data after the end of the top-level {what}: {self.trailing[:80]!r}")
            return
        if self.state == "in":
            partial = None if self.problem is not None else b"".join(self.parts)
            if self.level == 1 and partial is not None and not partial.strip(_WHITESPACE) and not self.index:
                partial = None
            yield JsonEnd(self.problem or "the JSON ends in the middle of a record", partial, self.index)
        elif self.state == "before":
            yield JsonEnd("no JSON object or array in the file")
        elif self.state == "out" and self.size:
            yield self._finish(b"", 0, 0)


def scan_json(stream: BinaryIO, level: int, limits: Limits | None = None) -> Iterator[JsonSegment | JsonEnd]:
    """The records of a JSON stream as byte segments (see :class:`_Scanner`); read errors propagate."""
    scanner = _Scanner(level, limits or Limits.from_env())
    while chunk := stream.read(_CHUNK):
        yield from scanner.feed(chunk)
        if scanner.state == "failed":
            break
    yield from scanner.close()


def json_depth_problem(data: bytes, limits: Limits) -> str | None:
    """The reason ``data`` (one JSON text) may not be parsed: deeper or larger than the limits; None when fine."""
    if len(data) > limits.max_record_bytes:
        return record_size_reason(limits.max_record_bytes)
    if data.count(b"[") + data.count(b"{") <= limits.max_json_depth:
        return None  # cannot be deeper than it has brackets
    if max_json_depth(data) > limits.max_json_depth:
        return depth_reason(limits.max_json_depth)
    return None


def _json_error(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, json.JSONDecodeError):
        return f"malformed JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
    return f"malformed JSON ({type(exc).__name__}: {exc})"


def _loads(data: bytes) -> Any:
    """``json.loads`` of strict UTF-8 (``json.loads(bytes)`` would let encoded surrogates through)."""
    return json.loads(data.decode("utf-8"))


def loads(data: bytes, limits: Limits | None = None) -> Any:
    """``json.loads`` of one record after the depth and size checks; raises :class:`RecordError` with the reason."""
    problem = json_depth_problem(data, limits or Limits.from_env())
    if problem is not None:
        raise RecordError(problem)
    try:
        return _loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RecordError(_json_error(exc)) from exc


def _text(data: bytes, limit: int = 20_000) -> str:
    return data[:limit].decode("utf-8", errors="replace")


_KEY = re.compile(rb'\s*("(?:[^"\\]|\\.)*")\s*:')


def _member_key(head: bytes) -> str | None:
    match = _KEY.match(head)
    if match is None:
        return None
    try:
        key = json.loads(match.group(1))
    except ValueError:
        return None
    return key if isinstance(key, str) else None


def iter_json_stream(
    path: str | os.PathLike[str], top: str, limits: Limits | None = None, *, label: str | None = None
) -> Iterator[tuple[Any, Any] | Refusal]:
    """Stream the members of a top-level JSON ``"object"`` (key, value) or ``"array"`` (index, value).

    A member that is deeper or larger than the limits, malformed, or not UTF-8 yields a
    :class:`Refusal` located at ``<file>#<key>`` (``<file>#item <i>`` in an array or
    when the key cannot be read) and reading goes on with the next member. A read
    failure (truncated or corrupt compressed stream, decompressed-size cap, a file
    cut inside a member) yields one final Refusal located after the last good member.
    ``label`` names the file in locations (default: its name).
    """
    limits = limits or Limits.from_env()
    name = label or Path(path).name
    last: Any = None
    count = 0
    level_name = "object" if top == "object" else "array"

    def where_after() -> str:
        if top == "object":
            return f"{name}#after {last}" if count else f"{name}#start"
        return f"{name}#item {count}"

    try:
        with open_decompressed(path, limits) as stream:
            for segment in scan_json(stream, 1, limits):
                if isinstance(segment, JsonEnd):
                    yield _end_refusal(segment, where_after(), count, "}" if top == "object" else "]", level_name)
                    return
                key = _member_key(segment.head) if top == "object" else None
                where = f"{name}#{key}" if key is not None else f"{name}#item {segment.index}"
                if segment.data is None:
                    yield Refusal(where, segment.problem or "unreadable record", raw_text=_text(segment.head, 2000))
                    continue
                try:
                    if top == "object":
                        member = _loads(b"{" + segment.data + b"}")
                        if len(member) != 1:
                            raise json.JSONDecodeError("expected one key: value member", "", 0)
                        ((key, value),) = member.items()
                    else:
                        key, value = segment.index, _loads(segment.data)
                except (ValueError, RecursionError) as exc:
                    yield Refusal(where, _json_error(exc), raw_text=_text(segment.data))
                    continue
                last = key
                count += 1
                yield key, value
    except Exception as exc:  # noqa: BLE001 - the rest of the stream is lost; say why and where
        yield Refusal(where_after(), f"{stream_problem(exc)}; {count} item(s) were read before it")


def _end_refusal(end: JsonEnd, where: str, count: int, closing: str, what: str) -> Refusal:
    """The refusal for a stream that did not end cleanly (a cut or malformed last record, trailing junk)."""
    reason = end.problem
    if end.partial is not None:
        reason = _partial_problem(end.partial, closing, b"{" if what == "object" else b"")
    raw_text = None if not end.partial else _text(end.partial)
    return Refusal(where, f"{reason}; {count} item(s) were read before it", raw_text=raw_text)


def _partial_problem(partial: bytes, closing: str, prefix: bytes) -> str:
    """Why an unfinished last record failed: the file was cut (the parser ran out of text) or it is malformed."""
    text = prefix + partial
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip(_WHITESPACE)) - 1 or exc.msg.startswith("Unterminated"):
            return f"file is truncated: the JSON ends in the middle of a record ({exc.msg})"
        return (
            f"malformed JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); the record is never closed "
            "before the end of the file, so the file may also be truncated"
        )
    except (ValueError, RecursionError) as exc:
        return _json_error(exc)
    return f"file is truncated: the top level is never closed with {closing!r}"


def is_json_lines(path: str | os.PathLike[str], limits: Limits | None = None) -> bool:
    """Whether a file whose first byte is ``{`` holds JSON lines rather than one (pretty-printed) document.

    JSON lines when its first non-blank line is a complete JSON value on its own, or (a
    broken first line) when the second one starts with ``{`` and is complete; the first
    line of a pretty-printed document never is.
    """
    limits = limits or Limits.from_env()
    seen = 0
    with open_decompressed(path, limits) as stream:
        for _, line in iter_lines(stream, min(limits.max_record_bytes, 1 << 24)):
            if line is not None and not line.strip(_WHITESPACE):
                continue
            seen += 1
            candidate = line is not None and (seen == 1 or line.lstrip(_WHITESPACE).startswith(b"{"))
            if candidate and _complete_value(line, limits):
                return True
            if seen >= 2:
                return False
    return False


def _complete_value(line: bytes, limits: Limits) -> bool:
    scanner = _Scanner(0, Limits(limits.max_json_depth, len(line) + 1, limits.max_decompressed_bytes))
    segments = [*scanner.feed(line.strip(_WHITESPACE)), *scanner.close()]
    return len(segments) == 1 and isinstance(segments[0], JsonSegment)


def iter_lines(stream: BinaryIO, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, line bytes) of a binary stream; a line longer than ``max_bytes`` gives
    (number, None) and is skipped without being held in memory."""
    number = 0
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        number += 1
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(1 << 20)
            yield number, None
            continue
        yield number, line


def iter_json_values(
    path: str | os.PathLike[str], limits: Limits | None = None, *, label: str | None = None
) -> Iterator[tuple[str, Any] | Refusal]:
    """(location suffix, value) of every top-level value of a file starting with ``{``.

    JSON lines (one value per line, location ``:line N``) or a sequence of documents,
    usually one pretty-printed document (location ``#item N``); see :func:`is_json_lines`.
    Bad values are refused alone; a read failure ends the file with one Refusal.
    ``label`` names the file in locations (default: its name).
    """
    limits = limits or Limits.from_env()
    name = label or Path(path).name
    count = 0
    lineno = 0
    try:
        if is_json_lines(path, limits):
            with open_decompressed(path, limits) as stream:
                for lineno, line in iter_lines(stream, limits.max_record_bytes):  # noqa: B007 - used on failure
                    where = f"{name}:line {lineno}"
                    if line is None:
                        yield Refusal(where, record_size_reason(limits.max_record_bytes, f"line {lineno}"))
                        continue
                    if lineno == 1 and line.startswith(_BOM):
                        line = line[len(_BOM) :]
                    if not line.strip(_WHITESPACE):
                        continue
                    problem = json_depth_problem(line, limits)
                    if problem is not None:
                        yield Refusal(where, f"line {lineno}: {problem}", raw_text=_text(line, 2000))
                        continue
                    try:
                        value = _loads(line)
                    except UnicodeDecodeError as exc:
                        reason = f"line {lineno} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                        yield Refusal(where, reason, raw_text=_text(line).rstrip("\r\n"))
                        continue
                    except (ValueError, RecursionError) as exc:
                        detail = f"{exc.msg} (column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else exc
                        reason = f"malformed JSON on line {lineno}: {detail}"
                        yield Refusal(where, reason, raw_text=_text(line).rstrip("\r\n"))
                        continue
                    count += 1
                    yield f":line {lineno}", value
            return
        with open_decompressed(path, limits) as stream:
            for segment in scan_json(stream, 0, limits):
                if isinstance(segment, JsonEnd):
                    yield _end_refusal(segment, f"{name}#item {count}", count, "}", "value")
                    return
                where = f"{name}#item {segment.index}"
                if segment.data is None:
                    yield Refusal(where, segment.problem or "unreadable record", raw_text=_text(segment.head, 2000))
                    continue
                try:
                    value = _loads(segment.data)
                except (ValueError, RecursionError) as exc:
                    yield Refusal(where, _json_error(exc), raw_text=_text(segment.data))
                    continue
                count += 1
                yield f"#item {segment.index}", value
    except Exception as exc:  # noqa: BLE001 - the rest of the file is lost; say why and where
        where = f"{name}:line {lineno + 1}" if lineno else f"{name}#item {count}"
        yield Refusal(where, f"{stream_problem(exc)}; {count} record(s) were read before it")


def first_byte_or_refusal(path: Path) -> bytes | Refusal:
    """The first non-blank byte of a JSON file, or the refusal of the whole file (unreadable or empty)."""
    try:
        first = first_json_byte(path)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a refusal of the file
        return Refusal(path.name, stream_problem(exc))
    if first is None:
        return Refusal(path.name, "file is empty (no JSON document)")
    return first

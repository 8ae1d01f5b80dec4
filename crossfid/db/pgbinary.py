"""PostgreSQL binary COPY encoding with numpy: the fast path for array-heavy rows.

psycopg's generic binary dumpers walk Python lists element by element, which is
most of the client time when loading frames (five float arrays per row). Here
arrays are encoded in one vectorised numpy operation each, in the wire format
of ``array_send`` (PostgreSQL ``src/backend/utils/adt/arrayfuncs.c``), and whole
rows are written to ``COPY ... (FORMAT BINARY)`` as bytes.

Format reminders: a binary COPY stream is a signature, flags and header-extension
length, then per row an int16 field count and per field an int32 byte length
(-1 for NULL) followed by the value, then an int16 -1 trailer. A one-dimensional
array value is ``ndim, has_nulls, element oid, length, lower bound`` (int32 each)
followed by ``length`` (int32 size, value) pairs. All integers are big-endian.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
NULL = struct.pack(">i", -1)

FLOAT8_OID = 701
INT2_OID = 21

_F8_ELEMENTS = np.dtype([("size", ">i4"), ("value", ">f8")])
_I2_ELEMENTS = np.dtype([("size", ">i4"), ("value", ">i2")])
_ARRAY_HEADER = struct.Struct(">iiiii")
_INT4 = struct.Struct(">i")


def _field(payload: bytes) -> bytes:
    return _INT4.pack(len(payload)) + payload


def _array(values: Any, elements: np.dtype, size: int, oid: int) -> bytes:
    flat = np.asarray(values).ravel()
    if flat.size == 0:
        return _field(struct.pack(">iii", 0, 0, oid))
    body = np.empty(flat.size, dtype=elements)
    body["size"] = size
    body["value"] = flat
    return _field(_ARRAY_HEADER.pack(1, 0, oid, flat.size, 1) + body.tobytes())


def float8_array(values: Any) -> bytes:
    """A ``double precision[]`` field (flattened, row-major); NULL for None."""
    return NULL if values is None else _array(values, _F8_ELEMENTS, 8, FLOAT8_OID)


def int2_array(values: Any) -> bytes:
    """A ``smallint[]`` field; NULL for None."""
    return NULL if values is None else _array(values, _I2_ELEMENTS, 2, INT2_OID)


def int4(value: int | None) -> bytes:
    return NULL if value is None else _field(struct.pack(">i", value))


def int8(value: int | None) -> bytes:
    return NULL if value is None else _field(struct.pack(">q", value))


def float8(value: float | None) -> bytes:
    return NULL if value is None else _field(struct.pack(">d", value))


def boolean(value: bool | None) -> bytes:
    return NULL if value is None else _field(b"\x01" if value else b"\x00")


def text(value: str | None) -> bytes:
    return NULL if value is None else _field(value.encode())


Encoder = Callable[[Any], bytes]


def encode_rows(rows: Iterable[Sequence[Any]], encoders: Sequence[Encoder]) -> Iterable[bytes]:
    """Binary COPY rows (without the stream header) for rows of values, one encoder per column."""
    count = struct.pack(">h", len(encoders))
    for row in rows:
        yield count + b"".join(encode(value) for encode, value in zip(encoders, row, strict=True))

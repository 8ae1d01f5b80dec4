"""Every hash recipe of crossfid, in one place. All digests are SHA-256, lower-case hex unless stated.

Changing any recipe here changes stored identities (frame, dataset, split, subset and AtomRef
hashes, fit and run keys, cache folders), so each recipe is versioned by its domain string and
only ever gets a new name, never a new meaning.

Recipes
-------
* bytes, text (UTF-8) and files (read in 1 MiB blocks): :func:`sha256_bytes`, :func:`sha256_text`,
  :func:`sha256_file`; base64 of the raw digest for HTML ``Content-Security-Policy``: :func:`sha256_base64`.
* canonical JSON (sorted keys, ``,``/``:`` separators, ``str()`` of anything JSON cannot encode):
  :func:`canonical_json`, :func:`json_digest`. Used for AtomRef fit keys, analysis input hashes,
  benchmark data hashes and run keys (:func:`benchmark_run_key`), graph-cache keys.
* frames (``crossfid-frame-v1``): :func:`frame_content_hash`, exact IEEE-754 bytes of the structure
  and labels; :func:`frame_record_hash` is the same recipe for a record already laid out in bytes
  (the columnar ingest path).
* structures (``crossfid-structure-v1``): :func:`structure_hash` of atomic numbers, lattice and
  fractional coordinates.
* multisets of frame hashes (``crossfid-dataset-v1``, ``crossfid-subset-v1``): :func:`hash_of_hashes`;
  labelled multisets (``crossfid-split-v1`` over the parts train, val, test, see
  :func:`crossfid.curation.splits.split_content_hash`): :func:`hash_of_labelled_hashes`;
  the seeded order of groups and frames: :func:`seeded_order_key`.
* AtomRef values: :func:`atomref_values_hash` (JSON list of the 94 values, NaN as null).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASET_HASH_DOMAIN",
    "FRAME_HASH_DOMAIN",
    "SPLIT_HASH_DOMAIN",
    "SUBSET_HASH_DOMAIN",
    "atomref_values_hash",
    "benchmark_run_key",
    "canonical_json",
    "dataset_content_hash",
    "frame_content_hash",
    "frame_hash_tail",
    "frame_record_hash",
    "hash_of_hashes",
    "hash_of_labelled_hashes",
    "json_digest",
    "seeded_order_key",
    "sha256_base64",
    "sha256_bytes",
    "sha256_file",
    "sha256_text",
    "structure_hash",
    "subset_content_hash",
]

FRAME_HASH_DOMAIN = b"crossfid-frame-v1"
STRUCTURE_HASH_DOMAIN = b"crossfid-structure-v1"
DATASET_HASH_DOMAIN = "crossfid-dataset-v1"
#: datasets frozen with a chosen training energy: the domain is followed by a space and the label
DATASET_LABELLED_HASH_DOMAIN = "crossfid-dataset-v2"
SPLIT_HASH_DOMAIN = "crossfid-split-v1"
SUBSET_HASH_DOMAIN = "crossfid-subset-v1"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- bytes, text, files


def sha256_bytes(data: bytes) -> str:
    """SHA-256 (hex) of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """SHA-256 (hex) of the UTF-8 bytes of ``text``."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_base64(data: bytes) -> str:
    """Base64 of the raw SHA-256 digest of ``data`` (as CSP ``'sha256-…'`` sources want it)."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- canonical JSON


def canonical_json(payload: Any) -> str:
    """Sorted keys, compact separators, ``str()`` of values JSON cannot encode."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)


def json_digest(payload: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_json` of ``payload``."""
    return sha256_text(canonical_json(payload))


def benchmark_run_key(benchmark: str, version: int, subject: str, data_hash: str, parameters: dict[str, Any]) -> str:
    """What a benchmark run computes, as one hash (``subject``: the model's sha256, or a method name)."""
    return json_digest(
        {"benchmark": benchmark, "version": version, "subject": subject, "data": data_hash, "parameters": parameters}
    )


# --------------------------------------------------------------------------- frames and structures


def frame_hash_tail(n_electronic_steps: int | None, scf_converged: bool | None) -> bytes:
    """The last bytes of the frame recipe: ``f"{n_electronic_steps}|{scf_converged}"``."""
    return f"{n_electronic_steps}|{scf_converged}".encode()


def frame_content_hash(
    atomic_numbers: Any,
    arrays: Mapping[str, Any],
    energies: Mapping[str, float | None],
    n_electronic_steps: int | None,
    scf_converged: bool | None,
) -> str:
    """Frame content hash (``crossfid-frame-v1``) over the physical content, never ids.

    ``arrays``: ``lattice`` (Å), ``frac_coords``, ``forces`` (eV/Å), ``stress`` (GPa), ``magmoms`` (μB),
    each None when absent; ``energies``: ``energy`` and ``corrected_energy`` (eV) or None. Floats are
    hashed as their exact little-endian IEEE-754 bytes, so the hash survives a PostgreSQL round trip.
    """
    h = hashlib.sha256(FRAME_HASH_DOMAIN)
    h.update(np.asarray(atomic_numbers, dtype="<i2").tobytes())
    for name in ("lattice", "frac_coords", "forces", "stress", "magmoms"):
        value = arrays.get(name)
        h.update(name.encode())
        if value is not None:
            h.update(np.asarray(value, dtype="<f8").tobytes())
    for name in ("energy", "corrected_energy"):
        value = energies.get(name)
        h.update(name.encode())
        if value is not None:
            h.update(np.float64(value).astype("<f8").tobytes())
    h.update(frame_hash_tail(n_electronic_steps, scf_converged))
    return h.hexdigest()


def frame_record_hash(record: bytes, n_electronic_steps: int | None, scf_converged: bool | None) -> str:
    """:func:`frame_content_hash` of a frame already laid out as its recipe bytes (domain first)."""
    h = hashlib.sha256(record)
    h.update(frame_hash_tail(n_electronic_steps, scf_converged))
    return h.hexdigest()


def structure_hash(atomic_numbers: Any, lattice: Any, frac_coords: Any) -> str:
    """Structure hash (``crossfid-structure-v1``): atomic numbers (int16), lattice (Å) and fractional coordinates."""
    h = hashlib.sha256(STRUCTURE_HASH_DOMAIN)
    h.update(np.asarray(atomic_numbers, dtype="<i2").tobytes())
    h.update(np.asarray(lattice, dtype="<f8").tobytes())
    h.update(np.asarray(frac_coords, dtype="<f8").tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- datasets, splits, subsets


def hash_of_hashes(domain: str, hashes: Iterable[str]) -> str:
    """SHA-256 (hex) of ``domain + "\\n"`` followed by each sorted hash and ``"\\n"``.

    ``sorted`` is code-point order; the input is a multiset. Every element must be a
    lower-case hex SHA-256, else ``ValueError``, so a malformed hash cannot change the recipe.
    """
    digest = hashlib.sha256(domain.encode("ascii") + b"\n")
    for value in sorted(hashes):
        if not isinstance(value, str) or not _HEX64.match(value):
            raise ValueError(f"not a lower-case hex SHA-256: {value!r}")
        digest.update(value.encode("ascii") + b"\n")
    return digest.hexdigest()


def dataset_content_hash(hashes: Iterable[str], energy_label: str | None = None) -> str:
    """Content hash of a dataset from its member frames' content hashes (order does not matter).

    ``energy_label`` (``uncorrected`` or ``mp2020``) is part of what a dataset is: the same frames
    with another training energy are another dataset (domain ``crossfid-dataset-v2 <label>``).
    None is the recipe of datasets frozen before the label was chosen (``crossfid-dataset-v1``).
    """
    if energy_label is None:
        return hash_of_hashes(DATASET_HASH_DOMAIN, hashes)
    return hash_of_hashes(f"{DATASET_LABELLED_HASH_DOMAIN} {energy_label}", hashes)


def subset_content_hash(frame_hashes: Iterable[str]) -> str:
    """Content hash of a nested training subset (order does not matter)."""
    return hash_of_hashes(SUBSET_HASH_DOMAIN, frame_hashes)


def hash_of_labelled_hashes(domain: str, groups: Iterable[tuple[str, Iterable[str]]]) -> str:
    """SHA-256 (hex) of labelled multisets of hashes, in the order given::

        sha256( domain + "\\n" + for label, hashes in groups:
                f"{label} {n}\\n" + b"".join(h + b"\\n" for h in sorted(hashes)) )

    Every hash must be a lower-case hex SHA-256, else ``ValueError``. Splits use it with
    ``crossfid-split-v1`` and the parts train, val, test.
    """
    digest = hashlib.sha256(domain.encode() + b"\n")
    for label, group in groups:
        hashes = sorted(group)
        digest.update(f"{label} {len(hashes)}\n".encode())
        for value in hashes:
            if not isinstance(value, str) or not _HEX64.match(value):
                raise ValueError(f"not a lower-case hex SHA-256: {value!r}")
            digest.update(value.encode("ascii") + b"\n")
    return digest.hexdigest()


def seeded_order_key(seed: int, key: str) -> bytes:
    """Sort key of a group (or frame) under ``seed``: the raw ``sha256(f"{seed}\\x00{key}")`` digest."""
    return hashlib.sha256(f"{int(seed)}\x00{key}".encode()).digest()


# --------------------------------------------------------------------------- AtomRefs


def atomref_values_hash(values: Any) -> str:
    """SHA-256 of an AtomRef's values as a JSON list (default separators; NaN as null, floats at full precision)."""
    payload = json.dumps([None if not np.isfinite(v) else float(v) for v in np.asarray(values, dtype=float)])
    return sha256_text(payload)

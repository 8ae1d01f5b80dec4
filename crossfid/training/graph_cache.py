"""CHGNet crystal graphs converted once per frame and converter settings, cached on disk.

Layout: ``root / key[:16] / content_hash[:2] / f"{content_hash}.pt"``, where ``key``
is the SHA-256 of the converter's settings (cutoffs, algorithm, isolated-atom
policy, chgnet version, cache format): a converter with other settings never
sees another's graphs. A frame's content hash covers its structure, so it names
its graph. Files hold ``CrystalGraph.to_dict()`` (torch.save) and are read back
with ``CrystalGraph.from_dict`` (``CrystalGraph.from_file`` returns the raw dict,
CHGNET_NOTES pitfall 3). They are written to a temporary file in the same
directory and renamed, so a crash or a concurrent run never leaves half a file;
an unreadable or inconsistent file is converted again (a miss), not an error.

On CPU the cache saves little time (conversion is ~2 ms per small structure,
CHGNET_NOTES); it matters on a GPU and for large datasets converted repeatedly.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crossfid.errors import InputError
from crossfid.hashing import json_digest
from crossfid.training.data import LabelledFrame

if TYPE_CHECKING:
    from chgnet.graph import CrystalGraph

log = logging.getLogger(__name__)

#: bump when what a cache file holds changes meaning
CACHE_FORMAT = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_GRAPH_FIELDS = frozenset(
    {
        "atomic_number",
        "atom_frac_coord",
        "atom_graph",
        "atom_graph_cutoff",
        "neighbor_image",
        "directed2undirected",
        "undirected2directed",
        "bond_graph",
        "bond_graph_cutoff",
        "lattice",
        "graph_id",
        "mp_id",
        "composition",
    }
)


class GraphConversionError(InputError):
    """chgnet could not convert a frame to a graph (e.g. an isolated atom beyond the cutoff)."""


def converter_settings(converter: Any) -> dict[str, Any]:
    """What a ``CrystalGraphConverter`` makes graphs with (cutoffs in Å), plus the chgnet version."""
    import chgnet

    return {
        "atom_graph_cutoff": float(converter.atom_graph_cutoff),
        "bond_graph_cutoff": float(converter.bond_graph_cutoff),
        "algorithm": str(converter.algorithm),
        "on_isolated_atoms": str(getattr(converter, "on_isolated_atoms", "error")),
        "chgnet": str(chgnet.__version__),
        "format": CACHE_FORMAT,
    }


def converter_key(converter: Any) -> str:
    """SHA-256 (hex) of :func:`converter_settings`."""
    return json_digest(converter_settings(converter))


class GraphCache:
    """Graphs of frames for one converter (``model.graph_converter``), converted on a miss and stored.

    Counters: ``hits`` and ``misses`` (graphs loaded, graphs converted), and the
    seconds spent converting and loading. Returned graphs have ``graph_id`` = the
    frame's content hash and ``mp_id`` = its material.
    """

    def __init__(self, root: Path, converter: Any) -> None:
        self.root = Path(root)
        self.converter = converter
        self.settings = converter_settings(converter)
        self.key = converter_key(converter)
        self.directory = self.root / self.key[:16]
        self.hits = 0
        self.misses = 0
        self.convert_seconds = 0.0
        self.load_seconds = 0.0

    def path(self, content_hash: str) -> Path:
        if not _HEX64.fullmatch(content_hash):
            raise ValueError(f"not a content hash (64 lower-case hex digits): {content_hash!r}")
        return self.directory / content_hash[:2] / f"{content_hash}.pt"

    def graph(self, frame: LabelledFrame) -> CrystalGraph:
        """The frame's graph: loaded when cached, else converted and stored."""
        path = self.path(frame.content_hash)
        graph = self._load(path, frame)
        if graph is None:
            self.misses += 1
            graph = self._convert(frame)
            self._store(path, graph)
        else:
            self.hits += 1
            graph.mp_id = frame.material
        return graph

    def graphs(self, frames: Sequence[LabelledFrame]) -> list[CrystalGraph]:
        return [self.graph(frame) for frame in frames]

    def _convert(self, frame: LabelledFrame) -> CrystalGraph:
        start = time.perf_counter()
        try:
            return self.converter(frame.structure(), graph_id=frame.content_hash, mp_id=frame.material)
        except Exception as exc:
            raise GraphConversionError(
                f"frame {frame.frame_id} ({frame.material}, {frame.content_hash[:12]}): "
                f"CHGNet graph conversion failed: {exc}"
            ) from exc
        finally:
            self.convert_seconds += time.perf_counter() - start

    def _load(self, path: Path, frame: LabelledFrame) -> CrystalGraph | None:
        """The cached graph, or None when absent or unusable (logged; it is then converted again)."""
        import torch
        from chgnet.graph import CrystalGraph

        if not path.exists():
            return None
        start = time.perf_counter()
        try:
            # only tensors, numbers and strings: the safe unpickler suffices and runs no code from the file
            data = torch.load(path, weights_only=True)
            problem = self._inconsistency(data, frame)
            if problem:
                raise ValueError(problem)
            return CrystalGraph.from_dict(data)
        except Exception as exc:
            log.warning("graph cache file %s is unusable (%s); converting again", path, exc)
            return None
        finally:
            self.load_seconds += time.perf_counter() - start

    def _inconsistency(self, data: Any, frame: LabelledFrame) -> str | None:
        """Why a loaded dict is not this frame's graph from this converter (None when it is)."""
        import numpy as np
        import torch

        if not isinstance(data, dict) or set(data) != _GRAPH_FIELDS:
            return "not a CrystalGraph dict"
        if data["graph_id"] != frame.content_hash:
            return f"graph_id {data['graph_id']!r} is not the file's content hash"
        cutoffs = (float(data["atom_graph_cutoff"]), float(data["bond_graph_cutoff"]))
        if cutoffs != (self.settings["atom_graph_cutoff"], self.settings["bond_graph_cutoff"]):
            return f"cutoffs {cutoffs} differ from the converter's"
        if not np.array_equal(data["atomic_number"].numpy(), frame.atomic_numbers):
            return "atomic numbers differ from the frame's"
        for name, value in (("atom_frac_coord", frame.frac_coords), ("lattice", frame.lattice)):
            if not torch.equal(data[name].detach(), torch.tensor(value, dtype=data[name].dtype)):
                return f"{name} differs from the frame's"
        return None

    def _store(self, path: Path, graph: CrystalGraph) -> None:
        """Write atomically (temporary file in the same directory, then rename); a failed write only warns."""
        import torch

        tmp: str | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                torch.save(graph.to_dict(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as exc:
            log.warning("could not write graph cache file %s: %s", path, exc)
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)

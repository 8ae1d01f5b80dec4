"""The model registry: CHGNet models shipped with chgnet (base models) and the weights training runs write.

Every model row carries the SHA-256 of its weights file, so a benchmark or
leaderboard cell is traceable to exact weights. Trained weights are written in
chgnet's own checkpoint layout (``{"model": model.as_dict(), ...}``), so
``CHGNet.from_file(path)`` reads them without crossfid.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crossfid.db.models import ModelRow
from crossfid.referencing.package_atomrefs import PACKAGE_ATOMREFS, chgnet_version, load_chgnet
from crossfid.referencing.store import ensure_package_atomref


class RegistryError(ValueError):
    """A model that is not registered, or whose weights file no longer matches its hash."""


@dataclass(frozen=True)
class PackageModel:
    name: str
    model_name: str | None  # argument of CHGNet.load (None: v0.3.0)
    directory: str  # folder in chgnet/pretrained/
    atomref: str  # the shipped AtomRef of its composition model


#: the base models: one per AtomRef shipped with chgnet, under the same names
PACKAGE_MODELS: dict[str, PackageModel] = {
    "chgnet-0.3.0": PackageModel("chgnet-0.3.0", None, "0.3.0", "chgnet-0.3.0"),
    "chgnet-r2scan": PackageModel("chgnet-r2scan", "r2scan", "r2scan", "chgnet-r2scan"),
}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_weights_file(model: PackageModel) -> Path:
    """The weights file of a shipped model inside the installed chgnet package."""
    import chgnet

    folder = Path(chgnet.__file__).resolve().parent / "pretrained" / model.directory
    files = sorted(folder.glob("*.pth.tar"))
    if len(files) != 1:
        raise RegistryError(f"expected one weights file in {folder}, found {len(files)}")
    return files[0]


def _n_parameters(model: Any) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def ensure_package_model(session: Session, name: str) -> ModelRow:
    """Register (once) a base model shipped with chgnet and its AtomRef; return its row."""
    try:
        spec = PACKAGE_MODELS[name]
    except KeyError:
        raise RegistryError(f"no model {name!r} ships with chgnet; known: {', '.join(PACKAGE_MODELS)}") from None
    row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
    if row is not None and row.provenance.get("chgnet_version") == chgnet_version():
        return row
    path = package_weights_file(spec)
    digest = file_sha256(path)
    atomref = ensure_package_atomref(session, spec.atomref)
    values = {
        "name": name,
        "kind": "package",
        "role": "base",
        "fidelities": list(PACKAGE_ATOMREFS[spec.atomref].fidelities),
        "sha256": digest,
        "path": str(path),
        "atomref_id": atomref.id,
        "n_parameters": _n_parameters(load_chgnet(spec.model_name)),
        "provenance": {"chgnet_version": chgnet_version(), "model_name": spec.model_name or "0.3.0"},
    }
    session.execute(insert(ModelRow).values(**values).on_conflict_do_nothing(index_elements=["name"]))
    row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one()
    if row.sha256 != digest:
        raise RegistryError(f"model {name!r} is registered with other weights than the installed chgnet ships")
    return row


def resolve_model(session: Session, ref: str | int) -> ModelRow:
    """A registered model by id or name; chgnet's shipped ones are registered on first use."""
    if isinstance(ref, int) or str(ref).strip().isdigit():
        row = session.get(ModelRow, int(ref))
        if row is None:
            raise RegistryError(f"no model with id {ref}")
        return row
    name = str(ref).strip()
    row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
    if row is None and name in PACKAGE_MODELS:
        return ensure_package_model(session, name)
    if row is None:
        known = sorted(set(session.scalars(select(ModelRow.name))) | set(PACKAGE_MODELS))
        raise RegistryError(f"no model {name!r}; known: {', '.join(known)}")
    return row


def load_registered_model(row: ModelRow, device: str = "cpu") -> Any:
    """A fresh CHGNet instance with the row's weights, after checking the file still has its hash."""
    import copy

    from chgnet.model import CHGNet

    if row.kind == "package":
        model = copy.deepcopy(load_chgnet(PACKAGE_MODELS[row.name].model_name))
    else:
        path = Path(row.path)
        if not path.exists():
            raise RegistryError(f"model {row.name}: weights file {path} is missing")
        if file_sha256(path) != row.sha256:
            raise RegistryError(f"model {row.name}: {path} no longer matches its registered sha256")
        with contextlib.redirect_stdout(io.StringIO()):  # CHGNet() prints a banner
            model = CHGNet.from_file(str(path))
    return model.to(device)


def save_weights(model: Any, path: Path, extra: dict[str, Any] | None = None) -> str:
    """Write weights in chgnet's checkpoint layout, atomically; return the file's SHA-256."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"model": {"state_dict": state, "model_args": model.model_args}, "crossfid": extra or {}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return file_sha256(path)


def register_trained_model(
    session: Session,
    *,
    name: str,
    path: Path,
    sha256: str,
    run_id: int,
    role: str,
    epoch: int,
    fidelities: list[str],
    atomref_id: int | None,
    n_parameters: int,
    provenance: dict[str, Any],
) -> ModelRow:
    """Register (or update, for a resumed run's ``last`` weights) a model a training run wrote."""
    values = {
        "name": name,
        "kind": "trained",
        "role": role,
        "fidelities": fidelities,
        "sha256": sha256,
        "path": str(path),
        "run_id": run_id,
        "epoch": epoch,
        "atomref_id": atomref_id,
        "n_parameters": n_parameters,
        "provenance": provenance,
    }
    stmt = insert(ModelRow).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={k: stmt.excluded[k] for k in ("sha256", "path", "epoch", "provenance")},
    )
    session.execute(stmt)
    return session.scalars(select(ModelRow).where(ModelRow.name == name)).one()

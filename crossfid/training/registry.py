"""The model registry: CHGNet models shipped with chgnet (base models) and the weights training runs write.

Every model row carries the SHA-256 of its weights file, so a benchmark or
leaderboard cell is traceable to exact weights. Trained weights are written in
chgnet's own checkpoint layout (``{"model": model.as_dict(), ...}``), so
``CHGNet.from_file(path)`` reads them without crossfid. Models are loaded through
:func:`crossfid.potentials.base.load_potential` with the row's :func:`model_spec`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from crossfid.db.models import ModelRow
from crossfid.errors import InputError
from crossfid.hashing import sha256_file
from crossfid.potentials.base import ModelSpec, load_potential
from crossfid.potentials.chgnet import SHIPPED_MODELS, chgnet_version
from crossfid.referencing.package_atomrefs import PACKAGE_ATOMREFS
from crossfid.referencing.store import ensure_package_atomref


class RegistryError(InputError):
    """A model that is not registered, or whose weights file no longer matches its hash."""


def model_spec(row: ModelRow) -> ModelSpec:
    """What loads a registered model anywhere: a shipped one by name, a trained one by weights path and sha256."""
    if row.kind == "package":
        return ModelSpec(row.name, family=row.family)
    return ModelSpec(row.name, kind=row.kind, path=row.path, sha256=row.sha256, family=row.family)


def ensure_package_model(session: Session, name: str) -> ModelRow:
    """Register (once) a base model shipped with chgnet and its AtomRef; return its row."""
    try:
        spec = SHIPPED_MODELS[name]
    except KeyError:
        raise RegistryError(f"no model {name!r} ships with chgnet; known: {', '.join(SHIPPED_MODELS)}") from None
    row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
    if row is not None and row.provenance.get("chgnet_version") == chgnet_version():
        return row
    path = spec.weights_file()
    digest = sha256_file(path)
    atomref = ensure_package_atomref(session, name)  # the AtomRef of its composition model, under the same name
    values = {
        "name": name,
        "kind": "package",
        "role": "base",
        "fidelities": list(PACKAGE_ATOMREFS[name].fidelities),
        "sha256": digest,
        "path": str(path),
        "atomref_id": atomref.id,
        "n_parameters": load_potential(name).n_parameters(),
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
    if row is None and name in SHIPPED_MODELS:
        return ensure_package_model(session, name)
    if row is None:
        known = sorted(set(session.scalars(select(ModelRow.name))) | set(SHIPPED_MODELS))
        raise RegistryError(f"no model {name!r}; known: {', '.join(known)}")
    return row


def save_weights(model: Any, path: Path, extra: dict[str, Any] | None = None) -> str:
    """Write weights in chgnet's checkpoint layout, atomically; return the file's SHA-256."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"model": {"state_dict": state, "model_args": model.model_args}, "crossfid": extra or {}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return sha256_file(path)


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

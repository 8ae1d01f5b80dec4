"""The model registry: CHGNet models shipped with chgnet (base models), the weights training runs write, and peers.

Every model row carries the SHA-256 of what it computes (its weights file, or for a multi-fidelity
modality or a calculator the digest of the file and what selects the behaviour), so a benchmark or
leaderboard cell is traceable to exact weights. Trained weights are written in
chgnet's own checkpoint layout (``{"model": model.as_dict(), ...}``), so
``CHGNet.from_file(path)`` reads them without crossfid. Peers (role ``peer``) are models crossfid
benchmarks but never fine-tunes: the SevenNet models shipped with sevenn (:func:`ensure_peer_model`)
and any ASE calculator (:func:`register_calculator`); they have no AtomRef. Models are loaded
through :func:`crossfid.potentials.base.load_potential` with the row's :func:`model_spec`.
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
from crossfid.hashing import json_digest, sha256_file
from crossfid.potentials.base import ModelSpec, encode_options, load_potential
from crossfid.potentials.chgnet import SHIPPED_MODELS, chgnet_version
from crossfid.referencing.package_atomrefs import PACKAGE_ATOMREFS
from crossfid.referencing.store import ensure_package_atomref


class RegistryError(InputError):
    """A model that is not registered, or whose weights file no longer matches its hash."""


def model_spec(row: ModelRow) -> ModelSpec:
    """What loads a registered model anywhere: a shipped one by name, a trained one by weights path and sha256,
    a calculator by factory, options and (optional) weights file with that file's sha256."""
    if row.kind == "package":
        return ModelSpec(row.name, family=row.family)
    options = encode_options(row.options)
    if row.kind == "calculator":
        weights = row.provenance.get("weights_sha256")
        return ModelSpec(
            row.name, "calculator", row.path or None, weights, row.family, factory=row.factory, options=options
        )
    return ModelSpec(row.name, kind=row.kind, path=row.path, sha256=row.sha256, family=row.family, options=options)


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


def _sevennet_models() -> dict[str, Any]:
    from crossfid.potentials.sevennet import SHIPPED_MODELS as SEVENNET_MODELS

    return SEVENNET_MODELS


def peer_names() -> tuple[str, ...]:
    """The crossfid names of the shipped peer models (:func:`ensure_peer_model`)."""
    return tuple(_sevennet_models())


def _insert_checked(session: Session, values: dict[str, Any], what: str) -> ModelRow:
    """Insert a model row unless its name exists; the row, refused when it is registered as something else."""
    session.execute(insert(ModelRow).values(**values).on_conflict_do_nothing(index_elements=["name"]))
    row = session.scalars(select(ModelRow).where(ModelRow.name == values["name"])).one()
    if row.sha256 != values["sha256"] or row.role != values["role"]:
        raise RegistryError(f"model {row.name!r} is registered already as a {row.role} model with other {what}")
    return row


def ensure_peer_model(session: Session, name: str) -> ModelRow:
    """Register (once) a peer model shipped with sevenn (:data:`crossfid.potentials.sevennet.SHIPPED_MODELS`):
    role ``peer``, no AtomRef; provenance: package version, load call, fidelities, modality, checkpoint sha256."""
    from crossfid.potentials.sevennet import FAMILY, sevenn_version

    shipped = _sevennet_models().get(name)
    if shipped is None:
        raise RegistryError(f"no peer model {name!r} ships with sevenn; known: {', '.join(_sevennet_models())}")
    row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
    if row is not None and row.provenance.get("sevenn_version") == sevenn_version():
        return row
    weights = sha256_file(shipped.weights_file())
    # the two modalities of a multi-fidelity checkpoint are two models: the modality is part of their identity
    digest = weights if shipped.modal is None else json_digest({"weights_sha256": weights, "modal": shipped.modal})
    values = {
        "name": name,
        "family": FAMILY,
        "kind": "package",
        "role": "peer",
        "fidelities": list(shipped.fidelities),
        "sha256": digest,
        "path": str(shipped.weights_file()),
        "n_parameters": load_potential(ModelSpec(name, family=FAMILY)).n_parameters(),
        "provenance": {
            "sevenn_version": sevenn_version(),
            "load_call": shipped.load_call,
            "model": shipped.label,
            "modal": shipped.modal,
            "fidelities": list(shipped.fidelities),
            "weights_sha256": weights,
        },
    }
    return _insert_checked(session, values, "weights")


def register_calculator(
    session: Session,
    name: str,
    factory: str,
    options: dict[str, Any] | None = None,
    weights: Path | None = None,
    fidelities: list[str] | None = None,
) -> ModelRow:
    """Register any ASE calculator ``factory(weights, **options)`` (``factory``: ``module:callable``) as a peer
    model of the fidelities its training data had; it is loaded once first, so a broken factory is refused here.
    Registering the same definition again returns its row; another definition under a taken name is refused."""
    from importlib.metadata import version

    from crossfid.potentials.ase_calculator import FAMILY, calculator_spec
    from crossfid.vocabulary import is_fidelity

    if not fidelities:
        raise RegistryError(f"calculator {name!r}: give the fidelities of its training data (--fidelity)")
    unknown = [f for f in fidelities if not is_fidelity(f)]
    if unknown:
        raise RegistryError(f"calculator {name!r}: unknown fidelities {', '.join(unknown)}")
    if name in SHIPPED_MODELS or name in _sevennet_models():
        raise RegistryError(f"{name!r} is the name of a shipped model")
    weights_sha256 = None if weights is None else sha256_file(weights)
    spec = calculator_spec(name, factory, options, path=weights, sha256=weights_sha256)
    n_parameters = load_potential(spec).n_parameters()
    options = dict(options or {})
    values = {
        "name": name,
        "family": FAMILY,
        "kind": "calculator",
        "role": "peer",
        "fidelities": list(fidelities),
        "sha256": json_digest({"factory": factory, "options": options, "weights_sha256": weights_sha256}),
        "path": "" if weights is None else str(Path(weights).resolve()),
        "n_parameters": n_parameters,
        "factory": factory,
        "options": options,
        "provenance": {"weights_sha256": weights_sha256, "ase_version": version("ase"), "load_call": factory},
    }
    return _insert_checked(session, values, "factory, options or weights")


def resolve_model(session: Session, ref: str | int) -> ModelRow:
    """A registered model by id or name; shipped ones (chgnet's base models, sevenn's peers) are registered on
    first use."""
    if isinstance(ref, int) or str(ref).strip().isdigit():
        row = session.get(ModelRow, int(ref))
        if row is None:
            raise RegistryError(f"no model with id {ref}")
        return row
    name = str(ref).strip()
    row = session.scalars(select(ModelRow).where(ModelRow.name == name)).one_or_none()
    if row is None and name in SHIPPED_MODELS:
        return ensure_package_model(session, name)
    if row is None and name in _sevennet_models():
        return ensure_peer_model(session, name)
    if row is None:
        known = sorted(set(session.scalars(select(ModelRow.name))) | set(SHIPPED_MODELS) | set(_sevennet_models()))
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

"""``crossfid models register|list``: the model registry (base models, fine-tunes, peers and calculators)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from crossfid.cli.options import Format, values
from crossfid.cli.render import Column, OutputFormat, out, render

app = typer.Typer(help="The model registry: register a peer (any ASE calculator), list models.", no_args_is_help=True)


def parse_options(items: list[str] | None) -> dict[str, object]:
    """``k=v`` pairs as keyword arguments; each value is read as JSON when it parses (numbers, booleans, lists),
    as text otherwise."""
    options: dict[str, object] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--option")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="The model's name on the board.")],
    calculator: Annotated[
        str, typer.Option(help="ASE calculator factory, module:callable (e.g. ase.calculators.emt:EMT).")
    ],
    fidelity: Annotated[
        list[str], typer.Option("--fidelity", "-f", help="Fidelity of its training data (repeatable).")
    ],
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Keyword argument of the factory, NAME=VALUE.")
    ] = None,
    weights: Annotated[
        Path | None, typer.Option(help="Weights file, passed to the factory first; its SHA-256 is recorded.")
    ] = None,
) -> None:
    """Register any ASE calculator as a peer model (benchmarked on the board, never fine-tuned).

    The calculator is built once here, so a factory that fails is refused before anything is stored.
    """
    from sqlalchemy.orm import Session

    from crossfid.runtime.database import engine as make_engine
    from crossfid.training.registry import register_calculator

    engine = make_engine()
    try:
        with Session(engine) as session, session.begin():
            row = register_calculator(session, name, calculator, parse_options(option), weights, values(fidelity))
            model_id, sha256 = row.id, row.sha256
    finally:
        engine.dispose()
    out.print(f"registered {name} (model {model_id}, {calculator}, sha256 {sha256[:12]})", highlight=False)


@app.command("list")
def list_models(fmt: Format = OutputFormat.table) -> None:
    """Every registered model: family, kind, role (base, best, last, peer), fidelities, weights hash."""
    from sqlalchemy import text

    from crossfid.runtime.database import engine as make_engine

    query = text(
        "SELECT id, name, family, kind, role, array_to_string(fidelities, ',') AS fidelities, run_id, "
        "n_parameters, factory, options, sha256, path, created_at FROM models ORDER BY id"
    )
    engine = make_engine()
    try:
        with engine.connect() as conn:
            result = conn.execute(query)
            fields, rows = list(result.keys()), [tuple(r) for r in result]
    finally:
        engine.dispose()
    shown = ("id", "name", "family", "kind", "role", "fidelities", "n_parameters", "factory")
    columns = [Column(name, justify="right" if name in ("id", "n_parameters") else "left") for name in shown]
    columns.append(Column("sha256", value=lambda r: str(r["sha256"])[:12]))
    render(fields, rows, fmt, columns=columns, title="models")

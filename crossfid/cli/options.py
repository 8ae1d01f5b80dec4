"""Options shared by several commands, and the parsers behind them.

Defaults come from code (typer shows them in ``--help``); help texts never repeat a default by hand.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from crossfid.cli.render import OutputFormat
from crossfid.runtime.dask import SCHEDULER_HELP, WORKERS_HELP, default_workers

#: rich markup would read "[/STRATEGY]" as a closing tag: the brackets are escaped
SPLIT_HELP = "Split id or DATASET[:VERSION]\\[/STRATEGY]\\[@SEED]."

#: the model ``train`` and ``benchmark scaling-law`` start from unless told otherwise
BASE_MODEL = "chgnet-0.3.0"

#: ``SPLIT``: a split reference as a positional argument
SplitArgument = Annotated[str, typer.Argument(metavar="SPLIT", help=SPLIT_HELP)]
#: ``--workers``: the one meaning of Dask workers (see :mod:`crossfid.runtime.dask`)
Workers = Annotated[
    int | None, typer.Option(help=WORKERS_HELP, min=0, show_default=f"{default_workers()} on this machine")
]
#: ``--workers`` of commands that run in this process unless asked otherwise
InProcessWorkers = Annotated[int, typer.Option("--workers", help=WORKERS_HELP, min=0)]
#: ``--scheduler``: a running Dask cluster
Scheduler = Annotated[str | None, typer.Option(help=SCHEDULER_HELP)]


class EnergyLabel(StrEnum):
    """``--energy-label``: crossfid.vocabulary.ENERGY_LABELS."""

    uncorrected = "uncorrected"
    mp2020 = "mp2020"


ENERGY_LABEL_HELP = (
    "Training energy of the dataset, chosen explicitly: 'uncorrected' DFT energies, or 'mp2020' "
    "(Materials Project 2020 corrected; every frame must have one)."
)

#: ``--format/-f`` of tabular output
Format = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format (csv and json: every column).")]


def values(options: list[str] | None) -> list[str]:
    """Repeated and comma-separated option values as one list (blanks dropped)."""
    return [v.strip() for value in options or [] for v in value.split(",") if v.strip()]


def fidelity(label: str | None) -> str | None:
    """A fidelity name from any accepted label (``PBE+U`` → ``GGA+U``)."""
    from crossfid.ingest.fidelity import fidelity_from_label

    return None if label is None else fidelity_from_label(label)


def fidelities(options: list[str] | str | None) -> list[str]:
    """Fidelity names from repeated and/or comma-separated labels."""
    return [fidelity(v) for v in values([options] if isinstance(options, str) else options)]

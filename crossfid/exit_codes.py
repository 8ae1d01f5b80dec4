"""The exit codes of every ``crossfid`` command: one table, documented in the README."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a ``crossfid`` process's exit status means."""

    #: the command did what was asked
    OK = 0
    #: the command could not be done: a domain error, a refusal by the database, an unreadable input
    ERROR = 1
    #: the command line was wrong (unknown command or option, missing or invalid value); nothing ran
    USAGE = 2
    #: ``crossfid ingest``: the run finished, but some input was quarantined (see the ``quarantine`` table)
    QUARANTINED = 3
    #: a check ran and found a problem: ``dataset audit --fail-on-leak``, ``dataset verify``
    CHECK_FAILED = 4

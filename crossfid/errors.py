"""The errors crossfid raises on purpose: the user can act on them, so the CLI prints them as one line.

Anything else that escapes a command is a bug and shows its traceback. Multiple inheritance keeps
``except ValueError`` (or ``LookupError``, ``RuntimeError``) working for callers that predate this module.
"""

from __future__ import annotations


class CrossfidError(Exception):
    """Base of every deliberate crossfid error."""


class InputError(CrossfidError, ValueError):
    """Bad user input: an argument, option, file content or data value that cannot be used."""


class NotFoundError(CrossfidError, LookupError):
    """No such object: dataset, split, AtomRef, model, run, benchmark..."""


class StateError(CrossfidError, RuntimeError):
    """The operation is not possible in the current state (frozen, not initialised, conflicting, busy...)."""


class IntegrityError(CrossfidError):
    """Stored data does not match its recorded hash or other verification."""

"""Materials Project identifiers in their legacy and AlphaID forms (pure; emmet-core's AlphaID does the arithmetic).

MP ids are integers written two ways: legacy ``mp-149``, and AlphaID (base-26 letters,
emmet-core's :class:`~emmet.core.mpid.AlphaID`): materials ``mp-aaaaaaft`` (padded to
8 letters) or ``mp-ft``, and task ids in MP's tasks collection bare, without prefix:
``aaaaaaft``. crossfid stores the legacy form, as MP displays it: ``mp-149`` below
AlphaID's cut point (3 347 529); above it, where no legacy number was ever minted, the
padded AlphaID the API serves (``mp-aaahilze``).

Only ids with an MP prefix (``mp``, ``mvc``) are converted; a bare id (``aaaaaaft``,
``149``) only where the caller says the value is an MP task id (``bare=True``), since
an arbitrary lowercase word would otherwise read as a number. Anything else is returned
unchanged (stripped).
"""

from __future__ import annotations

from typing import Any

#: prefixes of MP ids (materials, tasks) and of MP's "mvc" (hypothetical) materials
MP_PREFIXES = ("mp", "mvc")
#: width of the padded AlphaID form
ALPHA_PADLEN = 8


def parse_mp_id(value: Any, *, bare: bool = False) -> tuple[str, int] | None:
    """``(prefix, integer)`` of an MP id in any form, or None when ``value`` is not one.

    ``mp-149``, ``mp-ft``, ``mp-aaaaaaft`` → ``("mp", 149)``; with ``bare=True`` also
    ``aaaaaaft`` and ``149`` → ``("mp", 149)``. emmet's ``AlphaID``/``MPID`` objects are
    read through their text.
    """
    from emmet.core.mpid import AlphaID

    text = str(getattr(value, "string", value)).strip()
    prefix, dash, rest = text.partition("-")
    if dash:
        if prefix not in MP_PREFIXES or not rest or not _id_characters(rest):
            return None
    elif bare and _id_characters(text):
        prefix, rest = "mp", text
    else:
        return None
    try:
        return prefix, int(AlphaID(rest))
    except (ValueError, TypeError, KeyError):
        return None


def _id_characters(text: str) -> bool:
    """Digits only (legacy) or lowercase letters only (AlphaID): never a mixture."""
    return text.isascii() and (text.isdigit() or (text.isalpha() and text.islower()))


def legacy_mp_id(value: Any, *, bare: bool = False) -> str:
    """An MP id in the form crossfid stores (``mp-aaaaaaft`` → ``mp-149``); other ids unchanged.

    ``bare=True``: ``value`` is known to be an MP task id, which MP's tasks collection
    writes without prefix (``aaaaaaft`` → ``mp-149``).
    """
    from emmet.core.mpid import AlphaID

    parts = parse_mp_id(value, bare=bare)
    if parts is None:
        return str(getattr(value, "string", value)).strip()
    prefix, number = parts
    legacy = str(AlphaID(number, prefix=prefix).string)  # mp-<int> below AlphaID's cut point
    if legacy.partition("-")[2].isdigit():
        return legacy
    return str(AlphaID(number, padlen=ALPHA_PADLEN, prefix=prefix))  # no legacy form: the padded AlphaID


def alpha_mp_id(value: Any, *, task: bool = False, bare: bool = False) -> str:
    """An MP id in AlphaID form: material ``mp-149`` → ``mp-aaaaaaft``; ``task=True`` → ``aaaaaaft``.

    Task ids lose their prefix, as in MP's tasks collection (emmet's ``format_task_id``).
    Other ids unchanged.
    """
    from emmet.core.mpid import AlphaID

    parts = parse_mp_id(value, bare=bare or task)
    if parts is None:
        return str(getattr(value, "string", value)).strip()
    prefix, number = parts
    if task:
        return str(AlphaID(number, padlen=ALPHA_PADLEN))
    return str(AlphaID(number, padlen=ALPHA_PADLEN, prefix=prefix))


def mp_id_key(value: Any, *, bare: bool = False) -> str:
    """Comparison key of an id: every form of one MP id gives the same key (its legacy form)."""
    return legacy_mp_id(value, bare=bare)


def mp_id_sort_key(value: Any, *, bare: bool = False) -> tuple[str, int, str]:
    """Sort MP ids by prefix and number (``mp-9`` before ``mp-10`` before ``mp-aaaaaabd``); others after."""
    parts = parse_mp_id(value, bare=bare)
    text = str(getattr(value, "string", value)).strip()
    if parts is None:
        return ("~", -1, text)
    return (parts[0], parts[1], text)

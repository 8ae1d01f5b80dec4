"""The SQL cookbook of docs/sql.md as data: its statements and the indexes each must be able to use."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql.md"


def cookbook(doc: Path = DOC) -> list[tuple[str, tuple[str, ...]]]:
    """(statement, indexes named by its ``-- uses:`` line) for every statement of the document's sql blocks."""
    statements = []
    for block in re.findall(r"```sql\n(.*?)```", doc.read_text(), flags=re.S):
        for chunk in block.split(";"):
            lines = chunk.strip().splitlines()
            uses: tuple[str, ...] = ()
            for line in lines:
                if line.startswith("-- uses:"):
                    uses = tuple(name.strip() for name in line.removeprefix("-- uses:").split(","))
            body = "\n".join(line for line in lines if not line.lstrip().startswith("--")).strip()
            if body:
                statements.append((body, uses))
    return statements

"""The leaderboard as one self-contained static HTML page.

Everything the page needs is inside the file: CSS and JavaScript inline, figures embedded
as base64 ``data:`` URIs, and a Content-Security-Policy that forbids every network fetch,
so the page can be mailed, archived or served from any static host as it is.

The table sorts by clicking a header (numbers numerically, empty cells last in both
directions, a second click reverses). Each model name links to its section with its
figures. Opening the page as ``leaderboard.html#sort=COLUMN`` (``&order=desc`` for
descending) sorts on load, by clicking that header. Script errors are written into the
hidden ``<pre id="errors">``, so that a headless browser's DOM dump shows them.
"""

from __future__ import annotations

import base64
import math
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from html import escape
from pathlib import Path

from crossfid.hashing import sha256_base64

__all__ = ["ModelDetail", "render_leaderboard_html", "write_leaderboard_html"]

#: image types a browser shows from a ``data:`` URI, by file suffix
IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}

#: shown in a cell whose value is None (or NaN)
EMPTY_CELL = "—"


@dataclass(frozen=True)
class ModelDetail:
    """A model's figures for its detail section, caption → image file.

    E.g. ``{"training curve": Path(...), "parity": Path(...), "density ratios": Path(...),
    "scaling law": Path(...)}``. A file that is missing (or of a type a browser cannot
    show) is skipped with a note in the page.
    """

    name: str
    figures: dict[str, Path] = field(default_factory=dict)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _number(value: object) -> int | float | object:
    """Numbers of any kind (numpy scalars, ``Decimal`` from a NUMERIC column) as int or float; others unchanged."""
    if isinstance(value, bool) or not isinstance(value, numbers.Number | Decimal):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real | Decimal):
        return float(value)
    return value  # complex: shown as text


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _column_decimals(values: Sequence[object]) -> int | None:
    """Decimals for a column's floats: about four significant digits of its largest finite value, the same
    for every row so that the numbers line up; None when the column is better shown in ``g`` notation."""
    magnitudes = [abs(v) for v in values if isinstance(v, float) and math.isfinite(v) and v != 0]
    if not magnitudes:
        return 3
    largest = max(magnitudes)
    if largest < 1e-3 or largest >= 1e15:
        return None
    return min(6, max(0, 3 - math.floor(math.log10(largest))))


def _format_number(value: int | float, decimals: int | None) -> str:
    """Integers as they are, floats with the column's decimals (``g`` notation when ``decimals`` is None)."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if decimals is None:
        return f"{value:.3g}"
    return f"{value:.{decimals}f}"


def _sort_key(value: object) -> str:
    """What the script sorts by (``data-sort``): the full-precision number, or the text."""
    if _is_number(value):
        if isinstance(value, float) and math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    return str(value)


def _anchors(names: Sequence[str]) -> dict[str, str]:
    """A unique, valid ``id`` per model name (``model-`` + a slug)."""
    used: set[str] = set()
    result: dict[str, str] = {}
    for name in names:
        if name in result:
            continue
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.").lower() or "model"
        anchor, n = f"model-{slug}", 1
        while anchor in used:
            n += 1
            anchor = f"model-{slug}-{n}"
        used.add(anchor)
        result[name] = anchor
    return result


def _figure_html(caption: str, path: Path) -> str:
    path = Path(path)
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        return f'<p class="missing">{_e(caption)}: not shown ({_e(path.name)} is not an image type browsers show)</p>'
    try:
        data = path.read_bytes()
    except OSError:
        return f'<p class="missing">{_e(caption)}: no figure ({_e(path.name)} not found)</p>'
    uri = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return f'<figure><img src="{uri}" alt="{_e(caption)}"><figcaption>{_e(caption)}</figcaption></figure>'


_CSS = """
:root { color-scheme: light dark; --line: #8884; --muted: #777; --accent: #2b6cb0; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
  padding: 0 1rem; }
h1 { margin-bottom: .2rem; }
.generated { color: var(--muted); margin-top: 0; }
.notes { color: var(--muted); }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .35rem .6rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.empty { color: var(--muted); text-align: center; }
thead th[data-type="number"] { text-align: right; }
thead th { position: sticky; top: 0; background: Canvas; vertical-align: bottom; }
thead button { all: unset; cursor: pointer; font-weight: 600; }
thead button:focus-visible { outline: 2px solid var(--accent); }
.arrow { display: inline-block; width: 1em; color: var(--accent); }
tbody tr:hover { background: #8881; }
a { color: var(--accent); }
section.model { border-top: 1px solid var(--line); margin-top: 2rem; padding-top: .5rem; }
section.model:target { outline: 2px solid var(--accent); outline-offset: .5rem; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: min(36rem, 100%); height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); }
.missing { color: var(--muted); font-style: italic; }
#errors { color: #c00; }
""".strip()

#: installed before anything else runs: errors and console.error calls land in <pre id="errors"> (shared by every
#: crossfid page, so that a browser test reads one place)
ERRORS_JS = """
(function () {
  "use strict";
  var box = document.getElementById("errors");
  function record(text) { box.textContent += text + "\\n"; box.hidden = false; }
  window.onerror = function (message, source, line, column) {
    record("error: " + message + " (" + (source || "page") + ":" + line + ":" + column + ")");
  };
  window.addEventListener("unhandledrejection", function (event) {
    record("unhandled rejection: " + event.reason);
  });
  var consoleError = console.error;
  console.error = function () {
    record("console.error: " + Array.prototype.join.call(arguments, " "));
    return consoleError.apply(console, arguments);
  };
})();
""".strip()

_SORT_JS = """
(function () {
  "use strict";
  var table = document.getElementById("leaderboard");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
  var current = { column: -1, direction: 1 };

  function key(cell, numeric) {
    var value = cell ? cell.getAttribute("data-sort") : null;
    if (value === null || value === "") { return null; }
    if (numeric) {
      var number = Number(value);
      return isNaN(number) ? null : number;
    }
    return value;
  }

  function sortBy(column, direction) {
    var numeric = headers[column].getAttribute("data-type") === "number";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, index) {
      return { row: row, key: key(row.cells[column], numeric), index: index };
    });
    rows.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        if (a.key === b.key) { return a.index - b.index; }
        return a.key === null ? 1 : -1;  // empty cells last, whichever the direction
      }
      var order = numeric ? (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) : collator.compare(a.key, b.key);
      return order === 0 ? a.index - b.index : order * direction;
    });
    rows.forEach(function (item) { body.appendChild(item.row); });
    headers.forEach(function (header, index) {
      var arrow = header.querySelector(".arrow");
      if (index === column) {
        header.setAttribute("aria-sort", direction > 0 ? "ascending" : "descending");
        arrow.textContent = direction > 0 ? "\\u25B2" : "\\u25BC";
      } else {
        header.removeAttribute("aria-sort");
        arrow.textContent = "";
      }
    });
    current = { column: column, direction: direction };
    table.setAttribute("data-sorted-by", headers[column].getAttribute("data-column"));
    table.setAttribute("data-sort-order", direction > 0 ? "asc" : "desc");
  }

  headers.forEach(function (header, index) {
    header.querySelector("button").addEventListener("click", function () {
      sortBy(index, current.column === index ? -current.direction : 1);
    });
  });

  // Test and link hook: #sort=COLUMN (name or 0-based index), optional &order=desc.
  function sortFromHash() {
    var hash = window.location.hash.replace(/^#/, "");
    if (hash.indexOf("sort=") !== 0) { return; }
    var params = new URLSearchParams(hash);
    var wanted = params.get("sort");
    var column = headers.findIndex(function (h) { return h.getAttribute("data-column") === wanted; });
    if (column < 0 && /^[0-9]+$/.test(wanted) && Number(wanted) < headers.length) { column = Number(wanted); }
    if (column < 0) { throw new Error("#sort: no column named " + JSON.stringify(wanted)); }
    // Through the header's button, as a reader would: the first click sorts ascending, a second reverses.
    var direction = (params.get("order") || "asc").toLowerCase() === "desc" ? -1 : 1;
    var button = headers[column].querySelector("button");
    if (current.column !== column) { button.click(); }
    if (current.direction !== direction) { button.click(); }
  }
  window.addEventListener("hashchange", sortFromHash);
  sortFromHash();
})();
""".strip()


def csp_hash(source: str) -> str:
    """The Content-Security-Policy source allowing exactly this inline script or style."""
    return f"'sha256-{sha256_base64(source.encode('utf-8'))}'"


def page_opening(title: str, css: str, scripts: Sequence[str]) -> list[str]:
    """The lines of a self-contained crossfid page up to ``<main>``: a CSP allowing exactly ``css``, the
    error-capture script and ``scripts`` (to be placed by the caller) and ``data:`` images; the error box."""
    script_sources = " ".join(csp_hash(script) for script in (ERRORS_JS, *scripts))
    csp = (
        "default-src 'none'; img-src data:; "
        f"style-src {csp_hash(css)}; script-src {script_sources}; "
        "base-uri 'none'; form-action 'none'"
    )
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="generator" content="crossfid">',
        f"<title>{escape(title, quote=True)}</title>",
        f"<style>{css}</style>",
        "</head>",
        "<body>",
        '<pre id="errors" hidden></pre>',
        f"<script>{ERRORS_JS}</script>",
        "<main>",
    ]


def render_leaderboard_html(
    columns: list[str],
    rows: list[dict],
    *,
    title: str,
    generated_at: str,
    details: Mapping[str, ModelDetail] | None = None,
    notes: list[str] | None = None,
) -> str:
    """The leaderboard page as a string.

    ``columns`` are the header texts (units included as given, e.g. ``"energy MAE (meV/atom)"``);
    the first column is the model name. ``rows`` are dicts keyed by column whose values are
    None, numbers or strings (a missing key counts as None). ``details`` maps a model name to
    its figures; every model gets a section, with a note when it has no figures.
    """
    if not columns:
        raise ValueError("the leaderboard needs at least one column (the model name)")
    if len(set(columns)) != len(columns):
        raise ValueError(f"column names must be unique: {columns}")
    details = dict(details or {})
    name_column = columns[0]
    rows = [{column: _number(row.get(column)) for column in columns} for row in rows]
    names = [str(row.get(name_column)) for row in rows if not _is_empty(row.get(name_column))]
    names += [name for name in details if name not in names]
    anchors = _anchors(names)

    numeric: dict[str, bool] = {}
    decimals: dict[str, int | None] = {}
    for column in columns:
        values = [row.get(column) for row in rows if not _is_empty(row.get(column))]
        numeric[column] = column != name_column and bool(values) and all(_is_number(v) for v in values)
        decimals[column] = _column_decimals(values)

    head_cells = []
    for column in columns:
        kind = "number" if numeric[column] else "text"
        head_cells.append(
            f'<th scope="col" data-column="{_e(column)}" data-type="{kind}">'
            f'<button type="button">{_e(column)}<span class="arrow" aria-hidden="true"></span></button></th>'
        )

    body_rows = []
    for row in rows:
        cells = []
        for index, column in enumerate(columns):
            value = row.get(column)
            if index == 0:
                if _is_empty(value):
                    cells.append(f'<th scope="row" data-sort="">{EMPTY_CELL}</th>')
                else:
                    name = str(value)
                    cells.append(
                        f'<th scope="row" data-sort="{_e(name)}"><a href="#{anchors[name]}">{_e(name)}</a></th>'
                    )
            elif _is_empty(value):
                cells.append(f'<td class="empty" data-sort="">{EMPTY_CELL}</td>')
            elif _is_number(value):
                cells.append(
                    f'<td class="num" data-sort="{_e(_sort_key(value))}" title="{_e(value)}">'
                    f"{_e(_format_number(value, decimals[column]))}</td>"
                )
            else:
                cells.append(f'<td data-sort="{_e(value)}">{_e(value)}</td>')
        body_rows.append("<tr>" + "".join(cells) + "</tr>")

    sections = []
    for name in names:
        detail = details.get(name)
        parts = [f'<section class="model" id="{anchors[name]}">', f"<h3>{_e(name)}</h3>"]
        figures = detail.figures if detail is not None else {}
        if figures:
            parts += [_figure_html(caption, path) for caption, path in figures.items()]
        else:
            parts.append('<p class="missing">No figures for this model.</p>')
        parts.append('<p><a href="#leaderboard">↑ back to the leaderboard</a></p>')
        parts.append("</section>")
        sections.append("\n".join(parts))

    notes_html = ""
    if notes:
        notes_html = '<ul class="notes">' + "".join(f"<li>{_e(note)}</li>" for note in notes) + "</ul>"

    empty_note = "" if rows else '<p class="missing">No models on the leaderboard yet.</p>'
    return "\n".join(
        [
            *page_opening(title, _CSS, [_SORT_JS]),
            f"<h1>{_e(title)}</h1>",
            f'<p class="generated">Generated {_e(generated_at)}. Click a column header to sort.</p>',
            notes_html,
            '<div class="table-wrap">',
            '<table id="leaderboard">',
            "<thead><tr>" + "".join(head_cells) + "</tr></thead>",
            "<tbody>",
            *body_rows,
            "</tbody>",
            "</table>",
            "</div>",
            empty_note,
            '<h2 id="models">Models</h2>' if sections else "",
            *sections,
            "</main>",
            f"<script>{_SORT_JS}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )


def write_leaderboard_html(
    path: Path,
    columns: list[str],
    rows: list[dict],
    *,
    title: str,
    generated_at: str,
    details: Mapping[str, ModelDetail] | None = None,
    notes: list[str] | None = None,
) -> Path:
    """Write :func:`render_leaderboard_html` to ``path`` (parents created), atomically: a web
    server reading the file while it is refreshed sees the old page or the new one, never half."""
    path = Path(path)
    page = render_leaderboard_html(columns, rows, title=title, generated_at=generated_at, details=details, notes=notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(page)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path

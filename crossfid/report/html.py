"""The study's report as one self-contained HTML page.

As the leaderboard page (:mod:`crossfid.benchmarks.html`): CSS and scripts inline, figures as
base64 ``data:`` URIs, a Content-Security-Policy that allows exactly the inline code and no network.
Script errors and ``console.error`` calls land in the hidden ``<pre id="errors">``; once the page has
loaded, a script counts the figures that decoded into ``<p id="figure-check" data-total data-decoded>``,
so that a headless browser's DOM dump shows both.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from crossfid.benchmarks.html import IMAGE_TYPES, page_opening
from crossfid.report.figures import FigureFile
from crossfid.report.study import SECTIONS, StudyReport
from crossfid.report.tables import (
    SECTION_TITLES,
    SURROGATE_NOTE,
    Cell,
    Table,
    digest,
    provenance_tables,
    section_tables,
    when,
)

_CSS = """
:root { color-scheme: light dark; --line: #8884; --muted: #777; --accent: #2b6cb0; --warn: #b7791f; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 80rem;
  padding: 0 1rem; }
h1 { margin-bottom: .2rem; }
.generated, .notes, figcaption, caption { color: var(--muted); }
.surrogate { border: 2px solid var(--warn); padding: .5rem 1rem; border-radius: .3rem; }
.table-wrap { overflow-x: auto; margin: .5rem 0 1rem; }
table { border-collapse: collapse; }
caption { text-align: left; padding-bottom: .3rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 90%; }
section { border-top: 1px solid var(--line); margin-top: 2rem; }
figure { display: inline-block; margin: .5rem 1rem .5rem 0; vertical-align: top; }
figure img { max-width: min(40rem, 100%); height: auto; border: 1px solid var(--line); }
.missing { color: var(--muted); font-style: italic; }
#errors { color: #c00; }
""".strip()

_FIGURE_CHECK_JS = """
(function () {
  "use strict";
  window.addEventListener("load", function () {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (image) { return !(image.complete && image.naturalWidth > 0); });
    var box = document.getElementById("figure-check");
    box.setAttribute("data-total", String(images.length));
    box.setAttribute("data-decoded", String(images.length - broken.length));
    box.textContent = (images.length - broken.length) + " of " + images.length + " figures shown";
    broken.forEach(function (image) { console.error("figure not shown: " + image.alt); });
  });
})();
""".strip()


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _cell(cell: Cell, header: bool = False) -> str:
    tag = "th" if header else "td"
    attributes = ""
    if cell.value is not None:
        attributes += f' class="num" data-value="{_e(repr(cell.value))}"'
    if cell.title:
        attributes += f' title="{_e(cell.title)}"'
    content = f"<code>{_e(cell.text)}</code>" if cell.title and cell.value is None else _e(cell.text)
    return f"<{tag}{attributes}>{content}</{tag}>"


def render_table(table: Table) -> str:
    """A table with its caption; numeric cells carry their full-precision value in ``data-value``."""
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in table.headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in table.rows)
    if not table.rows:
        body = f'<tr><td colspan="{len(table.headers)}" class="missing">no rows</td></tr>'
    return (
        f'<div class="table-wrap"><table data-table="{_e(table.key)}"><caption>{_e(table.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


def _figure(figure: FigureFile) -> str:
    path = Path(figure.path)
    mime = IMAGE_TYPES.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path.name} is not an image type browsers show")
    uri = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    return (
        f'<figure><img src="{uri}" alt="{_e(figure.alt)}" data-section="{_e(figure.section)}">'
        f"<figcaption>{_e(figure.alt)}</figcaption></figure>"
    )


def _header(report: StudyReport) -> list[str]:
    parts = [
        f"<h1>Cross-fidelity study: {_e(report.dataset)}, split {_e(report.split_ref)}</h1>",
        f'<p class="generated">Generated {_e(when(report.generated_at))} from the database. '
        f"Dataset {_e(report.dataset)} ({_e(report.fidelity_label)}, {report.n_materials} materials, "
        f"{report.n_frames} frames, energy label {_e(report.energy_label or 'not recorded')}), content hash "
        f'<code title="{_e(report.dataset_hash or "")}">{_e(digest(report.dataset_hash).text)}</code>; '
        f"split {report.split_id} (seed {report.split_seed}), content hash "
        f'<code title="{_e(report.split_hash or "")}">{_e(digest(report.split_hash).text)}</code>; '
        f"data sources: {_e(', '.join(report.sources) or 'none')}.</p>",
    ]
    if report.surrogate:
        parts.append(f'<p class="surrogate" id="surrogate"><strong>{_e(SURROGATE_NOTE)}</strong></p>')
    return parts


def _section(report: StudyReport, section: str, figures: Sequence[FigureFile]) -> str:
    parts = [f'<section id="{_e(section)}">', f"<h2>{_e(SECTION_TITLES[section])}</h2>"]
    if section in report.missing:
        parts.append(f'<p class="missing" data-missing="{_e(section)}">{_e(report.missing[section])}</p>')
    parts += [render_table(table) for table in section_tables(report, section)]
    notes = []
    if section == "correlation" and report.correlation is not None:
        corr = report.correlation
        notes = [*corr.notes, f"AtomRefs: {corr.source_atomref or '—'} (source), {corr.target_atomref or '—'} (target)"]
    if section == "importance" and report.importance is not None:
        notes = report.importance.notes
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts += [_figure(f) for f in figures if f.section == section]
    parts.append("</section>")
    return "\n".join(parts)


def render_study_html(report: StudyReport, figures: Sequence[FigureFile]) -> str:
    """The report page as a string; ``figures`` are embedded in their sections."""
    title = f"crossfid study report: {report.dataset}, split {report.split_ref}"
    provenance = [render_table(t) for t in provenance_tables(report)]
    return "\n".join(
        [
            *page_opening(title, _CSS, [_FIGURE_CHECK_JS]),
            *_header(report),
            *(_section(report, section, figures) for section in SECTIONS),
            '<section id="provenance">',
            "<h2>Provenance</h2>",
            '<p class="notes">Every number above comes from these rows; hashes in full.</p>',
            *provenance,
            "</section>",
            '<p id="figure-check" class="notes" hidden></p>',
            "</main>",
            f"<script>{_FIGURE_CHECK_JS}</script>",
            "</body>",
            "</html>",
            "",
        ]
    )

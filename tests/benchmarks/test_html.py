"""The static leaderboard page: escaping, empty cells, embedded figures, anchors, and sorting in a real browser."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support.browser import chromium_path, dump_dom

from crossfid.benchmarks.html import ModelDetail, render_leaderboard_html, write_leaderboard_html

# a 1x1 PNG
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
ENERGY = "energy MAE (meV/atom)"
FORCE = "force MAE (meV/Å)"
COLUMNS = ["model", ENERGY, FORCE, "method"]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """Checks nesting and collects what the tests look at: attributes, table rows, the error box, scripts."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.body_rows: list[list[str]] = []
        self.head_cells: list[str] = []
        self.errors_text: str | None = None
        self.scripts: list[str] = []
        self.meta_csp: str | None = None
        self.ids: list[str] = []
        self.arrows: list[str] = []
        self.feed(text)
        self.close()
        if self.stack:
            self.problems.append(f"unclosed: {self.stack}")

    def _inside(self, tag: str) -> bool:
        return tag in self.stack

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.elements.append((tag, attributes))
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "meta" and (attributes.get("http-equiv") or "").lower() == "content-security-policy":
            self.meta_csp = attributes.get("content")
        if tag == "tr" and self._inside("tbody"):
            self.body_rows.append([])
        if tag in ("td", "th") and self._inside("tbody"):
            self.body_rows[-1].append("")
        if tag == "th" and self._inside("thead"):
            self.head_cells.append("")
        if tag == "span" and attributes.get("class") == "arrow":
            self.arrows.append("")
        if tag == "pre" and attributes.get("id") == "errors":
            self.errors_text = ""
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        if not self.stack:
            return
        if self.stack[-1] == "script":
            self.scripts.append(data)
        if self.stack[-1] == "pre" and self.errors_text is not None:
            self.errors_text += data
        if self._inside("tbody") and (self._inside("td") or self._inside("th")):
            self.body_rows[-1][-1] += data
        if self._inside("thead") and self._inside("th"):
            if self.stack[-1] == "span":
                self.arrows[-1] += data
            else:
                self.head_cells[-1] += data

    @property
    def first_column(self) -> list[str]:
        return [row[0] for row in self.body_rows]


def _rows() -> list[dict]:
    return [
        {"model": "chgnet-0.3.0", ENERGY: 30.25, FORCE: 77, "method": "zero-shot"},
        {"model": "<b>x</b>", ENERGY: 9.5, FORCE: None, "method": "tl-refit-atomref"},
        {"model": "run-3-best", ENERGY: None, FORCE: 61, "method": "scratch"},
        {"model": "run-4 & more", ENERGY: 10.125, "method": 'tl-frozen-atomref "3"'},  # FORCE key missing
    ]


def _page(tmp_path: Path, **kwargs) -> str:
    figure = tmp_path / "parity.png"
    figure.write_bytes(PNG)
    details = {
        "<b>x</b>": ModelDetail("<b>x</b>", {"parity": figure, "training curve": tmp_path / "missing.png"}),
        "run-3-best": ModelDetail("run-3-best", {"parity": figure}),
    }
    kwargs.setdefault("details", details)
    kwargs.setdefault("notes", ["MAEs on the <test> split", "lower is better"])
    return render_leaderboard_html(
        COLUMNS, _rows(), title="crossfid <leaderboard>", generated_at="2026-12-01", **kwargs
    )


# --------------------------------------------------------------------------- unit tests


def test_page_is_well_formed_html5(tmp_path):
    text = _page(tmp_path)
    assert text.startswith("<!DOCTYPE html>\n")
    page = Page(text)
    assert page.problems == []
    tags = [tag for tag, _ in page.elements]
    assert tags[:3] == ["html", "head", "meta"]
    assert page.elements[2][1] == {"charset": "utf-8"}
    assert tags.count("title") == 1 and tags.count("table") == 1
    assert len(page.ids) == len(set(page.ids)), "ids must be unique"


def test_text_is_escaped(tmp_path):
    text = _page(tmp_path)
    assert "<b>x</b>" not in text
    assert "&lt;b&gt;x&lt;/b&gt;" in text
    assert "<leaderboard>" not in text and "crossfid &lt;leaderboard&gt;" in text
    assert "<test>" not in text and "MAEs on the &lt;test&gt; split" in text
    assert "run-4 &amp; more" in text
    assert 'data-sort="tl-frozen-atomref &quot;3&quot;"' in text
    page = Page(text)
    assert "b" not in [tag for tag, _ in page.elements]
    assert page.first_column == ["chgnet-0.3.0", "<b>x</b>", "run-3-best", "run-4 & more"]


def test_headers_keep_their_units(tmp_path):
    page = Page(_page(tmp_path))
    assert page.head_cells == COLUMNS
    header_attrs = [a for tag, a in page.elements if tag == "th" and a.get("scope") == "col"]
    assert [a["data-type"] for a in header_attrs] == ["text", "number", "number", "text"]
    assert [a["data-column"] for a in header_attrs] == COLUMNS


def test_none_and_missing_values_render_as_empty_cells(tmp_path):
    page = Page(_page(tmp_path))
    by_model = {row[0]: row for row in page.body_rows}
    assert by_model["run-3-best"][1] == "—"
    assert by_model["<b>x</b>"][2] == "—"
    assert by_model["run-4 & more"][2] == "—"  # key absent
    assert "None" not in _page(tmp_path)
    empty = [a for tag, a in page.elements if tag == "td" and a.get("class") == "empty"]
    assert len(empty) == 3 and all(a["data-sort"] == "" for a in empty)


def test_numbers_share_a_column_format_and_keep_full_precision(tmp_path):
    page = Page(_page(tmp_path))
    assert [row[1] for row in page.body_rows] == ["30.25", "9.50", "—", "10.12"]
    assert [row[2] for row in page.body_rows] == ["77", "—", "61", "—"]
    sort_keys = [a["data-sort"] for tag, a in page.elements if tag == "td" and a.get("class") == "num"]
    assert "10.125" in sort_keys


def test_figures_are_embedded_and_missing_ones_noted(tmp_path):
    text = _page(tmp_path)
    encoded = base64.b64encode(PNG).decode("ascii")
    assert text.count(f'src="data:image/png;base64,{encoded}"') == 2
    assert "training curve: no figure (missing.png not found)" in text
    assert str(tmp_path) not in text, "server paths must not leak into the page"
    assert "No figures for this model." in text  # chgnet-0.3.0 and run-4 have no details


def test_no_external_resources(tmp_path):
    page = Page(_page(tmp_path))
    for tag, attributes in page.elements:
        assert tag not in ("link", "iframe", "object", "embed", "base")
        if "src" in attributes:
            assert tag == "img" and attributes["src"].startswith("data:image/"), (tag, attributes["src"][:40])
        if "href" in attributes:
            assert attributes["href"].startswith("#"), attributes["href"]
        assert not (tag == "script" and "src" in attributes)
    assert "url(" not in _page(tmp_path)
    assert "@import" not in _page(tmp_path)


def test_content_security_policy_allows_exactly_the_inline_code(tmp_path):
    text = _page(tmp_path)
    page = Page(text)
    csp = page.meta_csp
    assert csp is not None and "default-src 'none'" in csp and "img-src data:" in csp
    assert "unsafe-inline" not in csp
    style = re.search(r"<style>(.*?)</style>", text, re.S).group(1)
    for source in [*page.scripts, style]:
        digest = base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert len(page.scripts) == 2


def test_every_model_links_to_its_section(tmp_path):
    text = _page(tmp_path)
    page = Page(text)
    links = [a["href"][1:] for tag, a in page.elements if tag == "a" and a["href"] != "#leaderboard"]
    sections = [a["id"] for tag, a in page.elements if tag == "section"]
    assert links == sections and len(links) == 4
    assert all(re.fullmatch(r"model-[a-z0-9_.-]+", anchor) for anchor in sections)
    assert "leaderboard" in page.ids
    # the section of <b>x</b> holds its figure, escaped heading included
    start = text.index(f'id="{links[1]}"')
    section = text[start : text.index("</section>", start)]
    assert "<h3>&lt;b&gt;x&lt;/b&gt;</h3>" in section and "data:image/png;base64," in section


def test_anchors_are_unique_for_names_with_the_same_slug():
    rows = [{"model": "a b"}, {"model": "a/b"}, {"model": "A-B"}, {"model": "¿?"}]
    page = Page(render_leaderboard_html(["model"], rows, title="t", generated_at="now"))
    sections = [a["id"] for tag, a in page.elements if tag == "section"]
    assert sections == ["model-a-b", "model-a-b-2", "model-a-b-3", "model-model"]


def test_details_of_models_not_in_the_table_still_get_a_section(tmp_path):
    figure = tmp_path / "f.svg"
    figure.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>')
    text = render_leaderboard_html(
        ["model", ENERGY],
        [],
        title="t",
        generated_at="now",
        details={"retired": ModelDetail("retired", {"scaling law": figure, "raw": tmp_path / "data.csv"})},
    )
    assert "No models on the leaderboard yet." in text
    assert 'id="model-retired"' in text and "data:image/svg+xml;base64," in text
    assert "raw: not shown (data.csv is not an image type browsers show)" in text


def test_decimal_and_numpy_values_are_numbers():
    import numpy as np

    rows = [
        {"model": "a", ENERGY: Decimal("12.50"), FORCE: np.int64(61)},
        {"model": "b", ENERGY: np.float32(3.25), FORCE: Decimal("NaN")},
        {"model": "c", ENERGY: True, FORCE: 7},
    ]
    page = Page(render_leaderboard_html(["model", ENERGY, FORCE], rows, title="t", generated_at="now"))
    kinds = [a["data-type"] for tag, a in page.elements if tag == "th" and a.get("scope") == "col"]
    assert kinds == ["text", "text", "number"]  # a bool is not a number: the energy column sorts as text
    assert [row[2] for row in page.body_rows] == ["61", "—", "7"]
    rows[2][ENERGY] = None
    page = Page(render_leaderboard_html(["model", ENERGY, FORCE], rows, title="t", generated_at="now"))
    assert [row[1] for row in page.body_rows] == ["12.50", "3.25", "—"]


def test_bad_columns_are_refused():
    with pytest.raises(ValueError, match="at least one column"):
        render_leaderboard_html([], [], title="t", generated_at="now")
    with pytest.raises(ValueError, match="unique"):
        render_leaderboard_html(["model", "x", "x"], [], title="t", generated_at="now")


def test_write_creates_parents_and_leaves_no_temporary_file(tmp_path):
    out = tmp_path / "site" / "index.html"
    assert write_leaderboard_html(out, COLUMNS, _rows(), title="t", generated_at="now") == out
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in out.parent.iterdir()] == ["index.html"]
    write_leaderboard_html(out, COLUMNS, _rows()[:1], title="second", generated_at="now")
    assert "<title>second</title>" in out.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- in headless Chromium


@pytest.fixture
def chromium() -> str:
    return chromium_path()


def _dump_dom(chromium: str, page: Path, fragment: str, profile: Path) -> tuple[Page, list[str]]:
    """The DOM after the page's scripts ran, and the console messages Chromium logged for the page."""
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    html, console = dump_dom(chromium, url, profile, timeout=60)
    dom = Page(html)
    assert dom.body_rows, f"no table in the dumped DOM: {html[:500]!r}"
    return dom, console


def _sort_fragment(column: str, order: str = "asc") -> str:
    return urllib.parse.urlencode({"sort": column, "order": order}, quote_via=urllib.parse.quote)


@pytest.fixture
def three_models(tmp_path) -> Path:
    figure = tmp_path / "curve.png"
    figure.write_bytes(PNG)
    rows = [
        {"model": "alpha", ENERGY: 10.25, FORCE: 61, "method": "scratch"},
        {"model": "<b>beta</b>", ENERGY: None, FORCE: 77, "method": "tl-refit-atomref"},
        {"model": "gamma", ENERGY: 9.5, FORCE: None, "method": "Tl-frozen-atomref"},
    ]
    details = {name: ModelDetail(name, {"training curve": figure}) for name in ("alpha", "<b>beta</b>", "gamma")}
    return write_leaderboard_html(
        tmp_path / "leaderboard.html", COLUMNS, rows, title="crossfid leaderboard", generated_at="now", details=details
    )


def test_page_in_chromium_shows_every_model_without_errors(chromium, three_models, tmp_path):
    dom, console = _dump_dom(chromium, three_models, "", tmp_path / "profile")
    assert dom.first_column == ["alpha", "<b>beta</b>", "gamma"]
    assert dom.errors_text == ""
    assert console == []
    images = [a["src"] for tag, a in dom.elements if tag == "img"]
    assert len(images) == 3 and all(src.startswith("data:image/png;base64,") for src in images)


@pytest.mark.parametrize(
    ("column", "order", "expected"),
    [
        # 9.5 < 10.25 numerically (as text "10.25" < "9.5"); the empty cell last in both directions
        (ENERGY, "asc", ["gamma", "alpha", "<b>beta</b>"]),
        (ENERGY, "desc", ["alpha", "gamma", "<b>beta</b>"]),
        (FORCE, "desc", ["<b>beta</b>", "alpha", "gamma"]),
        ("method", "asc", ["alpha", "gamma", "<b>beta</b>"]),  # case-insensitive: scratch < Tl-frozen < tl-refit
        ("method", "desc", ["<b>beta</b>", "gamma", "alpha"]),
        ("model", "desc", ["gamma", "alpha", "<b>beta</b>"]),
    ],
)
def test_sorting_in_chromium(chromium, three_models, tmp_path, column, order, expected):
    dom, console = _dump_dom(chromium, three_models, _sort_fragment(column, order), tmp_path / "profile")
    assert dom.errors_text == "" and console == []
    assert dom.first_column == expected
    table = next(a for tag, a in dom.elements if tag == "table")
    assert table["data-sorted-by"] == column and table["data-sort-order"] == order
    header = next(a for tag, a in dom.elements if tag == "th" and a.get("data-column") == column)
    assert header["aria-sort"] == ("ascending" if order == "asc" else "descending")
    arrow = "▲" if order == "asc" else "▼"
    assert dom.arrows == [arrow if c == column else "" for c in COLUMNS]


def test_script_errors_reach_the_error_box(chromium, three_models, tmp_path):
    """The negative control: an error in the page's script is visible in the dumped DOM."""
    dom, console = _dump_dom(chromium, three_models, _sort_fragment("no such column"), tmp_path / "profile")
    assert '#sort: no column named "no such column"' in dom.errors_text
    assert any("no such column" in line for line in console)
    assert dom.first_column == ["alpha", "<b>beta</b>", "gamma"]

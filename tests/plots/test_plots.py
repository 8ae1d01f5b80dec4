"""Figures: energy scatter and periodic-table heatmap render headless PNGs that carry the numbers they show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image
from scipy import stats

from crossfid.plots.energy_scatter import build_energy_scatter_figure, plot_energy_scatter
from crossfid.plots.periodic_table import (
    MAX_Z,
    MISSING_COLOR,
    build_element_importance_figure,
    plot_element_importance,
)
from crossfid.plots.pngdata import DATA_KEY, read_data, save_with_data


def assert_valid_png(path: Path) -> None:
    assert path.is_file()
    assert path.stat().st_size > 5_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        extrema = image.convert("RGB").getextrema()
    assert any(lo != hi for lo, hi in extrema), "image is a single colour"


@pytest.fixture
def energies() -> dict:
    rng = np.random.default_rng(42)
    n = 25
    source = -6.0 + 1.5 * rng.standard_normal(n)
    target = 1.05 * source - 2.0 + 0.05 * rng.standard_normal(n)
    source_ref = 0.4 * rng.standard_normal(n)
    target_ref = source_ref + 0.03 * rng.standard_normal(n)
    return {
        "source": source,
        "target": target,
        "source_referenced": source_ref,
        "target_referenced": target_ref,
        "source_label": "PBE",
        "target_label": "r2SCAN",
    }


# --- pngdata -------------------------------------------------------------------------------------------------------


def test_save_and_read_data_roundtrip(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    data = {"a": np.float64(0.1 + 0.2), "b": np.arange(3), "c": [1e-300, float("nan"), float("inf")], "d": None}
    path = save_with_data(fig, tmp_path / "nested" / "dir" / "f.png", data)
    assert path == tmp_path / "nested" / "dir" / "f.png"
    assert read_data(path) == {"a": 0.1 + 0.2, "b": [0, 1, 2], "c": [1e-300, None, None], "d": None}
    with Image.open(path) as image:
        assert json.loads(image.text[DATA_KEY])["a"] == 0.1 + 0.2


def test_read_data_without_crossfid_chunk(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    Image.new("RGB", (4, 4), "red").save(path)
    with pytest.raises(ValueError, match="no crossfid figure data"):
        read_data(path)


def test_figures_do_not_use_pyplot() -> None:
    # fresh interpreter: building and saving both figures must never import pyplot (no global figure state)
    code = (
        "import sys, tempfile, pathlib\n"
        "from crossfid.plots.energy_scatter import plot_energy_scatter\n"
        "from crossfid.plots.periodic_table import plot_element_importance\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "plot_element_importance(d / 'p.png', {'Fe': 1.0})\n"
        "plot_energy_scatter(d / 's.png', source=[1, 2], target=[1, 3], source_referenced=[0, 1],"
        " target_referenced=[0, 2], source_label='a', target_label='b')\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MPLBACKEND": "TkAgg"})


# --- energy scatter ------------------------------------------------------------------------------------------------


def test_energy_scatter_png_and_data(tmp_path: Path, energies: dict) -> None:
    ids = [f"mp-{i}" for i in range(25)]
    path = plot_energy_scatter(tmp_path / "out" / "scatter.png", material_ids=ids, title="PBE vs r2SCAN", **energies)
    assert_valid_png(path)
    data = read_data(path)
    assert data["kind"] == "energy_scatter"
    assert data["n"] == 25
    assert data["material_ids"] == ids
    assert (data["source_label"], data["target_label"]) == ("PBE", "r2SCAN")
    for key in ("source", "target", "source_referenced", "target_referenced"):
        assert data[key] == energies[key].tolist()  # exact float round-trip
    assert data["pearson_raw"] == stats.pearsonr(energies["source"], energies["target"]).statistic
    assert (
        data["pearson_referenced"]
        == stats.pearsonr(energies["source_referenced"], energies["target_referenced"]).statistic
    )


def test_energy_scatter_figure_points_equal_inputs(energies: dict) -> None:
    fig, data = build_energy_scatter_figure(**energies)
    assert data["material_ids"] is None
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert {"scatter_raw", "scatter_referenced", "hist_x_raw", "hist_y_raw"} <= set(axes)
    for panel, (x, y) in {
        "raw": ("source", "target"),
        "referenced": ("source_referenced", "target_referenced"),
    }.items():
        ax = axes[f"scatter_{panel}"]
        (points,) = ax.collections
        np.testing.assert_array_equal(points.get_offsets(), np.column_stack([energies[x], energies[y]]))
        assert "eV/atom" in ax.get_xlabel() and "eV/atom" in ax.get_ylabel()
        # marginal histograms count every material
        assert sum(p.get_height() for p in axes[f"hist_x_{panel}"].patches) == 25
        assert sum(p.get_width() for p in axes[f"hist_y_{panel}"].patches) == 25
        texts = " ".join(t.get_text() for t in ax.texts)
        r = data[f"pearson_{panel}"]
        assert f"Pearson r = {r:.4f}" in texts
    lines = {line.get_label() for line in axes["scatter_referenced"].lines}
    assert "y = x" in lines
    assert any(label.startswith("lsq") for label in (line.get_label() for line in axes["scatter_raw"].lines))


def test_energy_scatter_constant_input_has_no_pearson(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        path = plot_energy_scatter(
            tmp_path / "c.png",
            source=[1.0, 1.0, 1.0],
            target=[2.0, 3.0, 4.0],
            source_referenced=[0.0, 0.1, 0.2],
            target_referenced=[0.0, 0.1, 0.3],
            source_label="a",
            target_label="b",
        )
    data = read_data(path)
    assert data["pearson_raw"] is None
    assert data["pearson_referenced"] == pytest.approx(stats.pearsonr([0, 0.1, 0.2], [0, 0.1, 0.3]).statistic)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": [1.0, 2.0]}, "equal lengths"),
        ({k: [1.0] for k in ("source", "target", "source_referenced", "target_referenced")}, "at least 2"),
        ({"source_referenced": [np.nan] * 25}, "non-finite"),
        ({"target": [np.inf] + [0.0] * 24}, "non-finite"),
        ({"source": np.zeros((5, 5))}, "1-D"),
        ({"material_ids": ["mp-1"]}, "material_ids"),
    ],
)
def test_energy_scatter_bad_input(tmp_path: Path, energies: dict, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plot_energy_scatter(tmp_path / "bad.png", **{**energies, **change})
    assert not (tmp_path / "bad.png").exists()


# --- periodic table ------------------------------------------------------------------------------------------------

IMPORTANCE = {"Fe": 1.0, "O": 0.25, "Li": 0.5, "La": 0.125, "Pu": 0.75, "H": 0.0, "Ce": 1 / 3}


def test_element_importance_png_and_data(tmp_path: Path) -> None:
    path = plot_element_importance(tmp_path / "pt" / "importance.png", IMPORTANCE, title="importance")
    assert_valid_png(path)
    data = read_data(path)
    assert data == {"kind": "element_importance", "title": "importance", "importance": IMPORTANCE}


def test_element_importance_cells() -> None:
    fig, data = build_element_importance_figure(IMPORTANCE, label="my label")
    assert data["title"] is None
    (ax,) = [a for a in fig.axes if a.get_label() == "ptable"]
    cells = {p.get_label(): p for p in ax.patches}
    assert len(cells) == MAX_Z == 94
    assert {"H", "He", "La", "Lu", "Ac", "Pu"} <= set(cells) and "Am" not in cells
    symbols = {t.get_text() for t in ax.texts}
    assert set(cells) <= symbols
    assert cells["Ne"].get_facecolor() == to_rgba(MISSING_COLOR)
    assert cells["Fe"].get_facecolor() != cells["O"].get_facecolor() != to_rgba(MISSING_COLOR)
    colorbar_axes = [a for a in fig.axes if a is not ax]
    assert any(a.get_ylabel() == "my label" for a in colorbar_axes)
    # no two cells overlap
    corners = {(p.get_x(), p.get_y()) for p in cells.values()}
    assert len(corners) == 94


@pytest.mark.parametrize(
    ("importance", "message"),
    [
        ({}, "empty"),
        ({"Fe": -0.1}, ">= 0"),
        ({"Fe": float("nan")}, "finite"),
        ({"Fe": float("inf")}, "finite"),
        ({"Xx": 1.0}, "unknown element"),
        ({"Am": 1.0}, "beyond Pu"),
        ({"Fe": "high"}, "number"),
    ],
)
def test_element_importance_bad_input(tmp_path: Path, importance: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plot_element_importance(tmp_path / "bad.png", importance)

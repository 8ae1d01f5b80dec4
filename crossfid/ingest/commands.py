"""``crossfid ingest <source>``: one sub-command per source, all through the same loader.

Every command prints a progress bar and a summary (tasks, frames, reference
entries added; already present; quarantined) and exits 0 when everything was
stored, 3 when some input was quarantined, 1 on error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

ingest_app = typer.Typer(
    help="Bring DFT data into the database (idempotent; bad records are quarantined).", no_args_is_help=True
)
console = Console()

#: source names rows are filed under; ingesting the same task through two paths of one source is idempotent
MP_SOURCE = "materials-project"

Files = Annotated[list[Path], typer.Argument(help="Input files.", exists=True, dir_okay=False, resolve_path=True)]


def _fidelity(label: str | None) -> str | None:
    from crossfid.ingest.fidelity import fidelity_from_label

    return None if label is None else fidelity_from_label(label)


def _run_ingest(source_name: str, source_kind: str, records, *, arguments: dict, **kwargs) -> tuple[object, int]:
    """:func:`~crossfid.ingest.runner.run_ingest` with storable names: a file name that is not UTF-8 (lone
    surrogates) or holds a NUL is written with escapes in the source name and the run's arguments."""
    from crossfid.ingest.records import escape_text, escape_unstorable
    from crossfid.ingest.runner import run_ingest

    return run_ingest(escape_text(source_name), source_kind, records, arguments=escape_unstorable(arguments), **kwargs)


def _finish(code: int) -> None:
    if code:
        raise typer.Exit(code)


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for value in values or [] for v in value.split(",") if v.strip()]


@ingest_app.command("mp")
def ingest_mp(
    material_ids: Annotated[
        list[str] | None, typer.Option("--material-ids", "-m", help="Material ids, e.g. mp-149,mp-19770.")
    ] = None,
    chemsys: Annotated[list[str] | None, typer.Option(help="Chemical systems, e.g. Fe-O.")] = None,
    formula: Annotated[list[str] | None, typer.Option(help="Formulas, e.g. Fe2O3.")] = None,
    fidelity: Annotated[
        list[str] | None, typer.Option("--fidelity", "-f", help="Fidelities to fetch (default GGA,GGA+U,r2SCAN).")
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="API endpoint (default: the public Materials Project API).")
    ] = None,
) -> None:
    """Materials Project through the mp-api client: tasks with every ionic step, and thermo entries."""
    from crossfid.config import Settings
    from crossfid.ingest.mp_api import read_materials_project

    key = Settings.from_env().require_mp_api_key()
    fidelities = [_fidelity(f) for f in _split(fidelity)] or ["GGA", "GGA+U", "r2SCAN"]
    selection = {"material_ids": _split(material_ids), "chemsys": _split(chemsys), "formula": _split(formula)}
    records = read_materials_project(
        **{k: v or None for k, v in selection.items()}, fidelities=fidelities, api_key=key.reveal(), endpoint=endpoint
    )
    arguments = {**selection, "fidelities": fidelities, "endpoint": endpoint}  # never the key
    _, code = _run_ingest(MP_SOURCE, "mp-api", records, arguments=arguments, console=console)
    _finish(code)


@ingest_app.command("mp-docs")
def ingest_mp_docs(files: Files) -> None:
    """Materials Project task documents saved to JSON / JSON.gz files (one document or a list)."""
    from crossfid.ingest.mp_docs import read_mp_docs

    records = read_mp_docs(files)
    _, code = _run_ingest(MP_SOURCE, "mp-docs", records, arguments={"files": [str(f) for f in files]}, console=console)
    _finish(code)


@ingest_app.command("mptrj")
def ingest_mptrj(
    file: Annotated[Path, typer.Argument(help="MPtrj-format JSON or JSON.gz.", exists=True, dir_okay=False)],
    fidelity: Annotated[
        str,
        typer.Option(
            "--fidelity",
            "-f",
            help="Fidelity of the file: GGA/GGA+U (MPtrj, decided per material), "
            "r2SCAN (MP-r2SCAN), or any fidelity name.",
        ),
    ],
    source: Annotated[str | None, typer.Option(help="Source name (default: mptrj:<file stem>).")] = None,
) -> None:
    """MPtrj-format JSON ({mp_id: {frame_id: frame}}), streamed; also the MP-r2SCAN release."""
    from crossfid.ingest.mptrj import MP_GGA_AUTO, read_mptrj

    fid = MP_GGA_AUTO if fidelity.replace(" ", "").upper() in ("GGA/GGA+U", "MPTRJ") else _fidelity(fidelity)
    name = source or f"mptrj:{file.name.split('.')[0]}"
    records = read_mptrj(file, fid)
    _, code = _run_ingest(name, "mptrj", records, arguments={"file": str(file), "fidelity": fid}, console=console)
    _finish(code)


@ingest_app.command("matpes")
def ingest_matpes(
    files: Files,
    stress_unit: Annotated[
        str, typer.Option(help="Unit of the stress field: kbar_vasp (VASP sign) or gpa_ase.")
    ] = "kbar_vasp",
    source: Annotated[str, typer.Option(help="Source name.")] = "matpes",
) -> None:
    """MatPES-style JSON / JSON-lines (one static calculation per document)."""
    from crossfid.ingest.matpes import read_matpes

    def records():
        for file in files:
            yield from read_matpes(file, stress_unit=stress_unit)

    arguments = {"files": [str(f) for f in files], "stress_unit": stress_unit}
    _, code = _run_ingest(source, "matpes", records(), arguments=arguments, console=console)
    _finish(code)


@ingest_app.command("vasp")
def ingest_vasp(
    roots: Annotated[list[Path], typer.Argument(help="Calculation directories or trees of them.", exists=True)],
    material_id: Annotated[str | None, typer.Option(help="Material id for all calculations found.")] = None,
    source: Annotated[str, typer.Option(help="Source name.")] = "vasp",
) -> None:
    """VASP calculation directories: every vasprun.xml(.gz) with all ionic steps and the INCAR."""
    from crossfid.ingest.vasp_dirs import find_calculations, read_vasp_dirs

    roots = [r.resolve() for r in roots]
    console.print(f"found {len(find_calculations(roots))} calculation directories")
    records = read_vasp_dirs(roots, material_id=material_id)
    arguments = {"roots": [str(r) for r in roots], "material_id": material_id}
    _, code = _run_ingest(source, "vasp", records, arguments=arguments, console=console)
    _finish(code)


@ingest_app.command("extxyz")
def ingest_extxyz(
    files: Files,
    fidelity: Annotated[
        str | None, typer.Option("--fidelity", "-f", help="Fidelity (else read from each frame's info).")
    ] = None,
    material_id: Annotated[str | None, typer.Option(help="Material id (else from info or the structure).")] = None,
    task_type: Annotated[str | None, typer.Option(help="relax or static (default: relax for >1 frame).")] = None,
    stress_convention: Annotated[
        str, typer.Option(help="ase (eV/Å³, ASE sign), gpa (GPa, ASE sign) or vasp_kbar.")
    ] = "ase",
    source: Annotated[str, typer.Option(help="Source name.")] = "ase",
) -> None:
    """extxyz or any ASE-readable trajectory."""
    from crossfid.ingest.ase_traj import read_ase_trajectory

    fid = _fidelity(fidelity)

    def records():
        for file in files:
            yield from read_ase_trajectory(
                file, fidelity=fid, material_id=material_id, stress_convention=stress_convention, task_type=task_type
            )

    arguments = {"files": [str(f) for f in files], "fidelity": fid, "material_id": material_id}
    _, code = _run_ingest(source, "ase", records(), arguments=arguments, console=console)
    _finish(code)


@ingest_app.command("demo")
def ingest_demo(
    materials: Annotated[int, typer.Option("--materials", "-n", help="Number of materials.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workers: Annotated[int, typer.Option(help="Dask worker processes for generation (0: in process).")] = 0,
    regenerate: Annotated[bool, typer.Option(help="Generate again even if the corpus file exists.")] = False,
) -> None:
    """A generated multi-fidelity corpus (CHGNet surrogate labels, not DFT) with known flaws, for offline use."""
    from crossfid.config import Settings
    from crossfid.ingest import demo

    path = demo.default_corpus_path(Settings.from_env().home, materials, seed)
    manifest = None
    if path.exists() and not regenerate:
        manifest = demo.load_demo_manifest(path)
        if manifest.settings != _default_demo_settings():
            manifest = None  # made with other settings: do not reuse it as the default corpus
        else:
            console.print(f"reusing the demo corpus {path}")
    if manifest is None:
        console.print(f"generating the demo corpus ({materials} materials, seed {seed}) → {path}")
        manifest = _generate_demo(path, materials, seed, workers)
        console.print(f"generated in {manifest.seconds:.0f} s")
    flaws = ", ".join(f"{kind} {count}" for kind, count in sorted(manifest.flaws.items()))
    console.print(
        f"corpus: {manifest.n_materials} materials, {manifest.n_tasks} tasks, {manifest.n_frames} frames, "
        f"{manifest.n_references} reference entries; injected flaws: {flaws}"
    )
    arguments = {"corpus": str(path), "materials": materials, "seed": seed}
    description = "generated by crossfid: labels from the CHGNet surrogate models, not DFT"
    _, code = _run_ingest(
        "demo", "demo", demo.read_demo_corpus(path), arguments=arguments, description=description, console=console
    )
    _finish(code)


def _default_demo_settings() -> dict:
    """The default generation settings as the corpus header records them (JSON types)."""
    import dataclasses
    import json

    from crossfid.ingest import demo

    return json.loads(json.dumps(dataclasses.asdict(demo.DemoSettings())))


def _generate_demo(path: Path, materials: int, seed: int, workers: int):
    from rich.progress import Progress

    from crossfid.ingest import demo

    client = None
    cluster = None
    if workers > 0:
        from dask.distributed import Client, LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        client = Client(cluster)
        console.print(f"dask dashboard: {client.dashboard_link}")
    try:
        with Progress(console=console, disable=not console.is_terminal) as progress:
            bar = progress.add_task("relaxing with CHGNet", total=materials)

            def on_progress(done: int, total: int) -> None:
                progress.update(bar, completed=done, total=total)

            return demo.generate_demo_corpus(
                path, n_materials=materials, seed=seed, client=client, progress=on_progress
            )
    finally:
        if client is not None:
            client.close()
            cluster.close()

"""``crossfid ingest <source>``: one sub-command per source, all through the same loader.

Every command prints its progress (a bar on a terminal, plain lines otherwise) and a summary (tasks, frames,
reference entries added; already present; quarantined) and exits 0 when everything was stored, 3 when some input
was quarantined, 1 on error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from crossfid.cli.options import InProcessWorkers, Scheduler, fidelities, fidelity, values
from crossfid.cli.render import out, progress

app = typer.Typer(
    help="Bring DFT data into the database (idempotent; bad records are quarantined).", no_args_is_help=True
)

#: source names rows are filed under; ingesting the same task through two paths of one source is idempotent
MP_SOURCE = "materials-project"
#: fidelities ``ingest mp`` fetches unless told otherwise
MP_FIDELITIES = ("GGA", "GGA+U", "r2SCAN")

Files = Annotated[list[Path], typer.Argument(help="Input files.", exists=True, dir_okay=False, resolve_path=True)]
#: ``--material-map``: task id → material id for records that name no material
MaterialMapFile = Annotated[
    Path | None,
    typer.Option(
        "--material-map",
        help="CSV (header task_id,material_id) or JSON object {task id: material id}: the material of tasks "
        "whose record names none (before structure matching).",
        exists=True,
        dir_okay=False,
        resolve_path=True,
    ),
]


def _ingest(source_name: str, source_kind: str, records, *, arguments: dict, **kwargs) -> None:
    """:func:`~crossfid.ingest.runner.run_ingest` with storable names (a file name that is not UTF-8 or holds a
    NUL is written with escapes in the source name and the run's arguments); exits with its status."""
    from crossfid.ingest.records import escape_text, escape_unstorable
    from crossfid.ingest.runner import run_ingest

    _, code = run_ingest(
        escape_text(source_name), source_kind, records, arguments=escape_unstorable(arguments), console=out, **kwargs
    )
    if code:
        raise typer.Exit(code)


def _material_map(path: Path | None):
    """The ``--material-map`` file, read; a bad file is a usage error (exit status 2, nothing ran)."""
    if path is None:
        return None
    from crossfid.errors import InputError
    from crossfid.ingest.grouping import read_material_map

    try:
        return read_material_map(path)
    except InputError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--material-map'") from None


def _grouped(records, material_map):
    """Records with a material for every bundle whose record names none (crossfid.ingest.grouping)."""
    from crossfid.ingest.grouping import assign_materials
    from crossfid.ingest.material_store import database_candidates

    return assign_materials(records, material_map=material_map, stored=database_candidates())


@app.command("mp")
def mp(
    material_ids: Annotated[
        list[str] | None, typer.Option("--material-ids", "-m", help="Material ids, e.g. mp-149,mp-19770.")
    ] = None,
    chemsys: Annotated[list[str] | None, typer.Option(help="Chemical systems, e.g. Fe-O.")] = None,
    formula: Annotated[list[str] | None, typer.Option(help="Formulas, e.g. Fe2O3.")] = None,
    fidelity: Annotated[
        list[str] | None,
        typer.Option("--fidelity", "-f", help="Fidelities to fetch.", show_default=",".join(MP_FIDELITIES)),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option(help="API endpoint (default: the public Materials Project API).")
    ] = None,
) -> None:
    """Materials Project through the mp-api client: tasks with every ionic step, and thermo entries."""
    from crossfid.config import Settings
    from crossfid.ingest.mp_api import read_materials_project

    key = Settings.from_env().require_mp_api_key()
    chosen = fidelities(fidelity) or list(MP_FIDELITIES)
    selection = {"material_ids": values(material_ids), "chemsys": values(chemsys), "formula": values(formula)}
    records = read_materials_project(
        **{k: v or None for k, v in selection.items()}, fidelities=chosen, api_key=key.reveal(), endpoint=endpoint
    )
    _ingest(MP_SOURCE, "mp-api", records, arguments={**selection, "fidelities": chosen, "endpoint": endpoint})


@app.command("mp-docs")
def mp_docs(files: Files, material_map: MaterialMapFile = None) -> None:
    """Materials Project task documents saved to JSON / JSON.gz files (one document or a list).

    Tasks without a material id are grouped into materials as MP's materials builder does.
    """
    from crossfid.ingest.mp_docs import read_mp_docs

    mapping = _material_map(material_map)
    arguments = {"files": [str(f) for f in files], "material_map": None if material_map is None else str(material_map)}
    _ingest(MP_SOURCE, "mp-docs", _grouped(read_mp_docs(files), mapping), arguments=arguments)


@app.command("entries")
def entries(
    files: Files,
    fidelity_label: Annotated[
        str | None,
        typer.Option(
            "--fidelity",
            "-f",
            help="Fidelity of entries whose parameters name no run type: a fidelity name, or GGA/GGA+U "
            "(the Materials Project rule by composition).",
        ),
    ] = None,
    material_map: MaterialMapFile = None,
    source: Annotated[str, typer.Option(help="Source name.")] = "entries",
) -> None:
    """pymatgen ComputedStructureEntry / ComputedEntry JSON (e.g. a phase diagram's entries) → reference entries.

    Entries without an MP material id are grouped into materials by their structures.
    """
    from crossfid.ingest.entries import read_entries
    from crossfid.ingest.mptrj import MP_GGA_AUTO

    auto = fidelity_label is not None and fidelity_label.replace(" ", "").upper() in ("GGA/GGA+U", "MPTRJ")
    fid = MP_GGA_AUTO if auto else fidelity(fidelity_label)
    mapping = _material_map(material_map)
    arguments = {
        "files": [str(f) for f in files],
        "fidelity": fid,
        "material_map": None if material_map is None else str(material_map),
    }
    _ingest(source, "entries", _grouped(read_entries(files, fidelity=fid), mapping), arguments=arguments)


@app.command("mptrj")
def mptrj(
    file: Annotated[Path, typer.Argument(help="MPtrj-format JSON or JSON.gz.", exists=True, dir_okay=False)],
    fidelity_label: Annotated[
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

    auto = fidelity_label.replace(" ", "").upper() in ("GGA/GGA+U", "MPTRJ")
    fid = MP_GGA_AUTO if auto else fidelity(fidelity_label)
    name = source or f"mptrj:{file.name.split('.')[0]}"
    _ingest(name, "mptrj", read_mptrj(file, fid), arguments={"file": str(file), "fidelity": fid})


@app.command("matpes")
def matpes(
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

    _ingest(source, "matpes", records(), arguments={"files": [str(f) for f in files], "stress_unit": stress_unit})


@app.command("vasp")
def vasp(
    roots: Annotated[list[Path], typer.Argument(help="Calculation directories or trees of them.", exists=True)],
    material_id: Annotated[str | None, typer.Option(help="Material id for all calculations found.")] = None,
    material_map: MaterialMapFile = None,
    source: Annotated[str, typer.Option(help="Source name.")] = "vasp",
) -> None:
    """VASP calculation directories: every vasprun.xml(.gz) / vaspout.h5 with all ionic steps and the INCAR.

    Without --material-id, calculations are grouped into materials as MP's materials builder does.
    A directory tree without any calculation is an error (exit status 1) naming the files looked for.
    """
    from crossfid.ingest.vasp_dirs import find_calculations, read_vasp_dirs

    if material_id is not None and material_map is not None:
        raise typer.BadParameter("give --material-id or --material-map, not both", param_hint="'--material-map'")
    mapping = _material_map(material_map)
    roots = [r.resolve() for r in roots]
    out.print(f"found {len(find_calculations(roots))} calculation directories")
    records = _grouped(read_vasp_dirs(roots, material_id=material_id), mapping)
    arguments = {
        "roots": [str(r) for r in roots],
        "material_id": material_id,
        "material_map": None if material_map is None else str(material_map),
    }
    _ingest(source, "vasp", records, arguments=arguments)


@app.command("extxyz")
def extxyz(
    files: Files,
    fidelity_label: Annotated[
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

    fid = fidelity(fidelity_label)

    def records():
        for file in files:
            yield from read_ase_trajectory(
                file, fidelity=fid, material_id=material_id, stress_convention=stress_convention, task_type=task_type
            )

    arguments = {"files": [str(f) for f in files], "fidelity": fid, "material_id": material_id}
    _ingest(source, "ase", records(), arguments=arguments)


@app.command("demo")
def demo(
    materials: Annotated[int, typer.Option("--materials", "-n", help="Number of materials.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    workers: InProcessWorkers = 0,
    scheduler: Scheduler = None,
    regenerate: Annotated[bool, typer.Option(help="Generate again even if the corpus file exists.")] = False,
) -> None:
    """A generated multi-fidelity corpus (SevenNet-MF-0 surrogate labels, not DFT) with known flaws, offline."""
    from crossfid.demo import generator as corpus
    from crossfid.ingest.demo import read_demo_corpus

    path = corpus.default_corpus_path(_home(), materials, seed)
    manifest = None
    if path.exists() and not regenerate:
        manifest = corpus.load_demo_manifest(path)
        if manifest.settings != _default_demo_settings():
            manifest = None  # made with other settings: do not reuse it as the default corpus
        else:
            out.print(f"reusing the demo corpus {path}")
    if manifest is None:
        out.print(f"generating the demo corpus ({materials} materials, seed {seed}) → {path}")
        manifest = _generate_demo(path, materials, seed, workers, scheduler)
        out.print(f"generated in {manifest.seconds:.0f} s")
    flaws = ", ".join(f"{kind} {count}" for kind, count in sorted(manifest.flaws.items()))
    out.print(
        f"corpus: {manifest.n_materials} materials, {manifest.n_tasks} tasks, {manifest.n_frames} frames, "
        f"{manifest.n_references} reference entries; injected flaws: {flaws}"
    )
    arguments = {"corpus": str(path), "materials": materials, "seed": seed}
    description = "generated by crossfid: relaxed by CHGNet, labelled by the SevenNet-MF-0 surrogate, not DFT"
    _ingest("demo", "demo", read_demo_corpus(path), arguments=arguments, description=description)


def _home() -> Path:
    from crossfid.config import Settings

    return Settings.from_env().home


def _default_demo_settings() -> dict:
    """The default generation settings as the corpus header records them (JSON types)."""
    import dataclasses
    import json

    from crossfid.demo import generator as corpus

    return json.loads(json.dumps(dataclasses.asdict(corpus.DemoSettings())))


def _generate_demo(path: Path, materials: int, seed: int, workers: int, scheduler: str | None):
    from crossfid.demo import generator as corpus
    from crossfid.runtime.dask import dask_client, scheduler_address

    with dask_client(workers, scheduler) as client:
        if workers or scheduler_address(scheduler):
            out.print(f"dask dashboard: {client.dashboard_link}")
        with progress() as steps:
            relaxed = steps.step(
                "demo corpus: relaxing (CHGNet) and labelling (SevenNet-MF-0)",
                materials,
                count="{done}/{total} materials",
            )
            return corpus.generate_demo_corpus(path, n_materials=materials, seed=seed, client=client, progress=relaxed)

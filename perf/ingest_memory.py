"""Peak memory of ``crossfid ingest mptrj`` against the size of the file, in one run.

    python perf/ingest_memory.py [--size-gb 1.0] [--workdir DIR] [--keep]

Writes two MPtrj-format files (``{mp_id: {frame_id: frame}}``, frames as in the MPtrj
release: a pymatgen structure dict, energies, forces, stress in kBar, magnetic
moments; 8-32 atoms, 10 frames per material) of ``--size-gb`` and a quarter of it
into a temporary directory, then runs the whole command

    crossfid ingest mptrj FILE --fidelity GGA

as a subprocess for each, into a fresh database on a throwaway embedded server (or
on the server of ``CROSSFID_DATABASE_URL``), and reports the peak resident set size
of that process (``ru_maxrss`` of ``os.wait4``, the kernel's own high-water mark)
and the ratio of the two peaks. A streaming ingest has a ratio near 1: its memory
does not grow with the file. Nothing here asserts; it prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from crossfid.config import Settings
from crossfid.db.embedded import ensure_server, stop_server

ELEMENTS = [("Fe", 26), ("O", 8), ("Li", 3), ("Mn", 25), ("Si", 14), ("Na", 11), ("Cl", 17), ("Ti", 22)]


def _structure(rng: np.random.Generator, lattice: np.ndarray, symbols: list[str], frac: np.ndarray) -> dict:
    """A pymatgen ``Structure.as_dict()`` (same keys and layout), without building the Structure."""
    a, b, c = (float(x) for x in np.linalg.norm(lattice, axis=1))
    cart = frac @ lattice
    return {
        "@module": "pymatgen.core.structure",
        "@class": "Structure",
        "charge": 0,
        "lattice": {
            "matrix": lattice.tolist(),
            "pbc": [True, True, True],
            "a": a,
            "b": b,
            "c": c,
            "alpha": 90.0,
            "beta": 90.0,
            "gamma": 90.0,
            "volume": float(abs(np.linalg.det(lattice))),
        },
        "properties": {},
        "sites": [
            {
                "species": [{"element": s, "occu": 1}],
                "abc": frac[i].tolist(),
                "properties": {"magmom": float(rng.normal(0, 1))},
                "label": s,
                "xyz": cart[i].tolist(),
            }
            for i, s in enumerate(symbols)
        ],
    }


def _material(rng: np.random.Generator, mp_id: str, n_frames: int = 10) -> dict:
    n = int(rng.integers(4, 17)) * 2
    pair = rng.choice(len(ELEMENTS), size=2, replace=False)
    symbols = [ELEMENTS[pair[i % 2]][0] for i in range(n)]
    side = (n * 12.0) ** (1 / 3)
    lattice = np.diag([side, side, side]) + rng.normal(0, 0.05, (3, 3))
    frac = rng.random((n, 3))
    e_relaxed = float(rng.normal(-6.0, 1.0))
    frames = {}
    for k in range(n_frames):
        frac = (frac + rng.normal(0, 0.002, frac.shape)) % 1.0
        energy = (e_relaxed + 0.02 * (n_frames - k)) * n
        frames[f"{mp_id}-{k // 5}-{k % 5}"] = {
            "structure": _structure(rng, lattice, symbols, frac),
            "uncorrected_total_energy": energy,
            "corrected_total_energy": energy - 0.3 * n,
            "energy_per_atom": energy / n - 0.3,
            "ef_per_atom": float(rng.normal(-1.0, 0.3)),
            "e_per_atom_relaxed": e_relaxed - 0.3,
            "ef_per_atom_relaxed": -1.0,
            "force": rng.normal(0, 0.3, (n, 3)).tolist(),
            "stress": rng.normal(0, 5.0, (3, 3)).tolist(),
            "magmom": (rng.random(n) * 3).tolist(),
            "bandgap": float(rng.random()),
            "mp_id": mp_id,
        }
    return frames


def write_mptrj(path: Path, size_bytes: int, prefix: str, seed: int) -> tuple[int, int]:
    """Write an MPtrj-format file of about ``size_bytes``; return (materials, frames)."""
    rng = np.random.default_rng(seed)
    written = 0
    materials = frames = 0
    with open(path, "w") as out:
        out.write("{")
        while written < size_bytes:
            mp_id = f"{prefix}-{materials}"
            material = _material(rng, mp_id)
            text = ("," if materials else "") + json.dumps(mp_id) + ": " + json.dumps(material)
            out.write(text)
            written += len(text)
            materials += 1
            frames += len(material)
        out.write("}")
    return materials, frames


def _fresh_database(admin_url: str) -> tuple[str, str]:
    name = f"crossfid_memperf_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def run_ingest(path: Path, database_url: str, home: Path) -> tuple[int, float, float, str]:
    """(exit code, seconds, peak RSS in MiB, last lines of output) of one ``crossfid ingest mptrj`` process."""
    env = {**os.environ, "CROSSFID_DATABASE_URL": database_url, "CROSSFID_HOME": str(home)}
    command = [sys.executable, "-m", "crossfid.cli", "ingest", "mptrj", str(path), "--fidelity", "GGA"]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        output.seek(0)
        tail = output.read().decode(errors="replace").strip().splitlines()[-12:]
    return process.returncode, seconds, usage.ru_maxrss / 1024, "\n".join(tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the larger file (GB, 1e9 bytes)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files and databases")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crossfid-memperf-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = Settings.from_env()
    home = None
    if settings.database_url:
        admin_url = settings.database_url
        where = "server from CROSSFID_DATABASE_URL"
    else:
        home = workdir / "home"
        admin_url = ensure_server(home).libpq_url("postgres")
        where = f"throwaway embedded server in {home}"
    created: list[str] = []
    results = []
    try:
        sizes = [("quarter", args.size_gb / 4), ("full", args.size_gb)]
        for label, size_gb in sizes:
            path = workdir / f"mptrj-{label}.json"
            start = time.perf_counter()
            materials, frames = write_mptrj(path, int(size_gb * 1e9), f"mp{label[0]}", seed=len(results))
            print(
                f"wrote {path.name}: {path.stat().st_size / 1e9:.3f} GB, {materials:,} materials, {frames:,} frames "
                f"({time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            name, url = _fresh_database(admin_url)
            created.append(name)
            code, seconds, peak, tail = run_ingest(path, url, workdir / "cli-home")
            if code != 0:
                raise SystemExit(f"crossfid ingest exited with {code}:\n{tail}")
            with psycopg.connect(url) as conn:
                stored = conn.execute("SELECT count(*) FROM frames").fetchone()[0]
            if stored != frames:
                raise SystemExit(f"{stored} frames stored, {frames} written")
            results.append((label, path.stat().st_size, frames, seconds, peak))
            rate = frames / seconds
            print(f"  ingested in {seconds:.0f} s ({rate:,.0f} frames/s), peak RSS {peak:,.0f} MiB", flush=True)
            if not args.keep:
                path.unlink()

        print()
        print("crossfid ingest mptrj: peak memory against file size")
        print(f"  database: {where}")
        print(f"  {'file':8s} {'GB':>7s} {'frames':>10s} {'seconds':>8s} {'frames/s':>9s} {'peak RSS MiB':>13s}")
        for label, size, frames, seconds, peak in results:
            print(f"  {label:8s} {size / 1e9:7.3f} {frames:10,d} {seconds:8.0f} {frames / seconds:9,.0f} {peak:13,.0f}")
        (_, small, _, _, small_peak), (_, large, _, _, large_peak) = results
        print(f"  file size ratio {large / small:.2f}, peak RSS ratio {large_peak / small_peak:.2f}")
    finally:
        if not args.keep:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                for name in created:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if home is not None:
            stop_server(home)
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Does the demo show the study's order? Test energy MAE of methods 4 < 1 < 3, for several split seeds.

Runs the demo's own commands (the ``crossfid`` CLI, as ``make demo`` does) in a fresh
``CROSSFID_HOME`` on the embedded database: ingest the demo corpus, curate and freeze the
r2SCAN dataset, then for every seed split it 8:1:1, fit the r2SCAN AtomRef and train
``tl-refit-atomref`` (method 4), ``scratch`` (method 1) and ``tl-frozen-atomref``
(method 3). Prints each run's test MAEs (energy meV/atom, force meV/Å) read back from the
database, whether the order holds per seed, and the seconds each seed took.

    .venv/bin/python perf/study_order.py [--materials 24] [--epochs 2] [--seeds 0,1,2] [--home DIR]

The defaults are ``make demo``'s (``DEMO_MATERIALS``, ``DEMO_EPOCHS``). A corpus already
generated in ``--home`` is reused. Exit status 0 whether or not the order holds: it is a
measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CROSSFID = str(Path(sys.executable).with_name("crossfid"))
METHODS = {"tl-refit-atomref": 4, "scratch": 1, "tl-frozen-atomref": 3}
#: the fit make demo makes (and the one crossfid train makes when given no AtomRef)
ATOMREF_FIT = ("--fill-from", "chgnet-r2scan", "--prior", "chgnet-r2scan", "--prior-weight", "100")


def run(*args: str, env: dict[str, str], capture: bool = False) -> str:
    """Run one crossfid command; stop with its output when it fails."""
    done = subprocess.run([CROSSFID, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"crossfid {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout if capture else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--materials", type=int, default=int(os.environ.get("DEMO_MATERIALS", 24)))
    parser.add_argument("--epochs", type=int, default=int(os.environ.get("DEMO_EPOCHS", 2)))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--home", type=Path, default=None, help="CROSSFID_HOME (default: a new temporary one)")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="crossfid-study-order-"))
    env = {**os.environ, "CROSSFID_HOME": str(home)}
    env.pop("CROSSFID_DATABASE_URL", None)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"home {home}; {args.materials} materials, {args.epochs} epochs, seeds {seeds}", flush=True)

    started = time.perf_counter()
    run("db", "init", env=env)
    run("ingest", "demo", "--materials", str(args.materials), "--workers", "2", env=env)
    freeze = ("--freeze", "order", "--energy-label", "uncorrected")
    run("curate", "--fidelity", "r2SCAN", "--workers", "2", *freeze, env=env)
    print(f"corpus ingested, curated and frozen in {time.perf_counter() - started:.0f} s", flush=True)

    held = 0
    for seed in seeds:
        t0 = time.perf_counter()
        run("dataset", "split", "order", "--ratios", "8:1:1", "--seed", str(seed), env=env)
        split = f"order@{seed}"
        run("atomref", "fit", split, *ATOMREF_FIT, env=env)
        for method in METHODS:
            run("train", "--split", split, "--method", method, "--epochs", str(args.epochs),
                "--batch-size", str(args.batch_size), env=env)  # fmt: skip
        rows = json.loads(run("runs", "list", "--format", "json", env=env, capture=True))
        mae = {}
        for row in sorted(rows, key=lambda r: r["id"])[-len(METHODS) :]:  # this seed's runs: the last ones
            mae[row["method"]] = tuple(None if row[k] is None else float(row[k]) for k in ("test_e", "test_f"))
        line = ", ".join(f"method {METHODS[m]} ({m}) E {e} F {f}" for m, (e, f) in mae.items())
        e4, e1, e3 = (mae.get(m, (None, None))[0] for m in METHODS)
        holds = None not in (e4, e1, e3) and e4 < e1 < e3
        held += holds
        verdict = "yes" if holds else "NO"
        print(f"seed {seed}: {line}; 4 < 1 < 3: {verdict} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"order held for {held} of {len(seeds)} seeds; {time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()

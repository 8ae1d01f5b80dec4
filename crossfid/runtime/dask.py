"""Dask clients with one meaning of ``--workers`` everywhere.

* ``scheduler`` (or ``CROSSFID_DASK_SCHEDULER``): connect to that running cluster; ``workers`` is ignored.
* ``workers == 0``: in this process (one worker thread, no process start-up).
* ``workers == N > 0``: N local worker processes, one thread each.
* ``workers is None``: :func:`default_workers` local processes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from crossfid.config import Settings
from crossfid.errors import InputError

if TYPE_CHECKING:
    from distributed import Client

#: the one help text of every ``--workers`` option
WORKERS_HELP = (
    "Dask workers: 0 runs in this process, N starts N local worker processes (default: min(2, CPU cores)); "
    "ignored when --scheduler or CROSSFID_DASK_SCHEDULER names a running cluster."
)
#: the one help text of every ``--scheduler`` option
SCHEDULER_HELP = "Address of a running Dask scheduler, e.g. tcp://host:8786 (default: CROSSFID_DASK_SCHEDULER)."


def default_workers() -> int:
    """Local worker processes when none are asked for: min(2, CPU cores)."""
    return min(2, os.cpu_count() or 1)


def scheduler_address(scheduler: str | None = None) -> str | None:
    """``scheduler`` if given, else ``CROSSFID_DASK_SCHEDULER`` (read now), else None."""
    return scheduler or Settings.from_env().dask_scheduler


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A ``distributed.Client`` (see the module doc); closes the client and any cluster it started."""
    from distributed import Client, LocalCluster

    address = scheduler_address(scheduler)
    if address:
        with Client(address) as client:
            yield client
        return
    n = default_workers() if workers is None else int(workers)
    if n < 0:
        raise InputError(f"--workers must be 0 (in process) or a positive number of processes, not {n}")
    if n == 0:
        cluster = LocalCluster(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0")
    else:
        cluster = LocalCluster(processes=True, n_workers=n, threads_per_worker=1, dashboard_address=":0")
    with cluster, Client(cluster) as client:
        yield client

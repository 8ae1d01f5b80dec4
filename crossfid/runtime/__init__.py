"""Process runtime: the configured database, Dask clients, the data-directory layout and signal handling.

One home for each: :mod:`.database` (the migrated engine), :mod:`.dask` (``dask_client`` and the one
meaning of ``--workers``), :mod:`.paths` (``DataDirs``), :mod:`.signals` (``stop_on_signals``).
"""

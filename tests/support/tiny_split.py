"""A tiny r2SCAN split of a demo corpus for training and benchmark tests (real ingest, Dask curation, freeze)."""

from __future__ import annotations


def make_tiny_split(engine, database_url, corpus, client, *, subsets=()) -> int:
    """Ingest ``corpus``, curate its r2SCAN frames on Dask, freeze them as ``tiny`` and split 6:2:2; the split id."""
    from crossfid.curation.datasets import freeze_dataset
    from crossfid.curation.pipeline import run_curation
    from crossfid.curation.split_store import create_split
    from crossfid.ingest.demo import read_demo_corpus
    from crossfid.ingest.loader import ingest

    assert ingest(engine, "demo", "demo", read_demo_corpus(corpus.path)).quarantined == 0
    summary = run_curation(engine, database_url, ["r2SCAN"], client=client)
    freeze_dataset(engine, summary.run_id, "tiny", energy_label="uncorrected")
    return create_split(engine, "tiny", (6, 2, 2), seed=0, subset_sizes=subsets).id

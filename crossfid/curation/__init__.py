"""MPtrj-style curation rules, StructureMatcher dedupe, Dask pipeline, dataset versions and splits."""

"""Ingestion of multi-fidelity DFT sources into canonical records and the database."""

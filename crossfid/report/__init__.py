"""The study's report: every table and figure of the cross-fidelity study, read from the database."""

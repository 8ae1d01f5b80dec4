"""The demo corpus: a generated, seeded multi-fidelity dataset so that everything runs offline."""

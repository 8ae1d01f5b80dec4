"""Atomic reference energies (AtomRef) and cross-fidelity analysis."""

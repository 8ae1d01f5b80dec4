"""Figures: parity plots, training curves, scaling laws, periodic-table heatmaps."""

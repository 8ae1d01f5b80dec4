"""Benchmarks (test MAEs, formation/decomposition energies, density, scaling law) and leaderboard."""

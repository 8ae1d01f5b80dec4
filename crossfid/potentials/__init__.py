"""Interatomic potentials: the one way crossfid loads, runs and modifies a model (:mod:`crossfid.potentials.base`)."""

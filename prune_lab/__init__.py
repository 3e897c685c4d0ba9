"""prune_lab: neural-network pruning experiments as Hydra sweeps."""

__version__ = "0.1.0"

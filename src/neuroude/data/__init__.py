"""Recordings: the `Recording` container, file formats, packaged and simulated data.

The modules here import only numpy, scipy and neuroude.errors, never JAX.
"""

from neuroude.data.grasshopper import load_grasshopper
from neuroude.data.npz import load_npz, save_npz
from neuroude.data.recording import Recording
from neuroude.data.synthetic import simulate_latent_sde, true_predictive_counts

__all__ = [
    "Recording",
    "load_grasshopper",
    "load_npz",
    "save_npz",
    "simulate_latent_sde",
    "true_predictive_counts",
]

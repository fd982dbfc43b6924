"""Recordings: the `Recording` container, file formats, packaged and simulated data.

The modules here import only numpy, scipy, h5py, pynwb and neuroude.errors, never JAX;
h5py and pynwb are imported only when a file needs them.
"""

from neuroude.data.arrays import load_hdf5, load_mat
from neuroude.data.grasshopper import load_grasshopper
from neuroude.data.hcp import load_hcp_bold, load_hcp_connectivity
from neuroude.data.loaders import detect_format, load_recording
from neuroude.data.npz import load_npz, save_npz
from neuroude.data.nwb import load_nwb
from neuroude.data.recording import Recording
from neuroude.data.synthetic import simulate_latent_sde, true_predictive_counts

__all__ = [
    "Recording",
    "detect_format",
    "load_grasshopper",
    "load_hcp_bold",
    "load_hcp_connectivity",
    "load_hdf5",
    "load_mat",
    "load_npz",
    "load_nwb",
    "load_recording",
    "save_npz",
    "simulate_latent_sde",
    "true_predictive_counts",
]

"""Load a recording from any supported file: NPZ, NWB, MATLAB or HDF5.

The format comes from the extension (.npz, .nwb, .mat, .h5, .hdf5, .hdf) and is checked
against the file's first bytes. A file with another extension is recognised from its content
alone, and an .h5 or .hdf5 file that is an NWB file is read as NWB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from neuroude.data.arrays import load_hdf5, load_mat
from neuroude.data.formats import EXTENSIONS, FORMATS, check_file, sniff_format
from neuroude.data.npz import load_npz
from neuroude.data.nwb import load_nwb
from neuroude.data.recording import Recording
from neuroude.errors import ConfigError

LOADERS = {"npz": load_npz, "nwb": load_nwb, "mat": load_mat, "hdf5": load_hdf5}

# Keyword options each loader accepts, for error messages and for `config_options`.
OPTIONS = {
    "npz": (),
    "nwb": (
        "bin_width", "stimulus", "behaviour", "trial_length", "splits", "trial_duration", "align_to", "align_window",
    ),
    "mat": ("y", "ts", "dt", "u", "behaviour", "mask", "layout"),
    "hdf5": ("y", "ts", "dt", "u", "behaviour", "mask", "layout"),
}

# Options without a default, checked before the loader is called so that a missing one is a ConfigError.
REQUIRED = {"npz": (), "nwb": ("bin_width",), "mat": ("y",), "hdf5": ("y",)}


def detect_format(path: str | os.PathLike) -> str:
    """Return the format `load_recording` reads `path` as: "npz", "nwb", "mat" or "hdf5"."""
    path = check_file(path)
    by_extension = EXTENSIONS.get(path.suffix.lower())
    if by_extension is None or by_extension == "hdf5":
        return sniff_format(path)
    return by_extension


def load_recording(path: str | os.PathLike, format: str | None = None, **options: Any) -> Recording:
    """Read `path` with the loader of its format, passing `options` on.

    Options per format:

    - npz: none.
    - nwb: bin_width (required), stimulus, behaviour, trial_length, splits, trial_duration,
      align_to, align_window; see `load_nwb`.
    - mat, hdf5: y (required), ts or dt, u, behaviour, mask, layout; see `load_mat`.

    `format` overrides the detected format; the file's content must still match it.
    Raises ConfigError for an unknown format or an option the format does not take.
    """
    path = Path(path)
    if format is None:
        format = detect_format(path)
    if format not in LOADERS:
        raise ConfigError(f"format is {format!r}; expected one of {list(FORMATS)}")

    missing = [name for name in REQUIRED[format] if name not in options]
    if missing:
        raise ConfigError(
            f"{format} files need the option {', '.join(missing)}, which is missing (options given: {sorted(options) or 'none'}); "
            f"expected the required options: {', '.join(REQUIRED[format])}"
        )

    unknown = sorted(set(options) - set(OPTIONS[format]))
    if unknown:
        allowed = ", ".join(OPTIONS[format]) or "none"
        raise ConfigError(f"{format} files take no option {', '.join(unknown)}; the options for {format} are: {allowed}")
    return LOADERS[format](path, **options)


def config_options(format: str, bin_width: float, read: dict[str, Any]) -> dict[str, Any]:
    """Translate the `data` section of a run configuration into `load_recording` options.

    `read` is `data.read` as a dict. Its `stimulus` list becomes the NWB `stimulus` or the
    MATLAB/HDF5 `u`, and its `window` becomes the NWB `trial_duration`. Options left at None
    are not passed, so the loader's defaults apply.
    """
    if format == "npz":
        return {}
    if format == "nwb":
        options = {
            "bin_width": bin_width,
            "stimulus": read.get("stimulus") or (),
            "behaviour": read.get("behaviour") or (),
            "trial_length": read.get("trial_length", "pad"),
            "splits": read.get("splits"),
            "trial_duration": read.get("window"),
            "align_to": read.get("align_to"),
            "align_window": read.get("align_window"),
        }
    else:
        options = {name: read.get(name) for name in ("y", "ts", "dt", "mask", "layout")}
        options["u"] = read.get("stimulus") or None
        options["behaviour"] = read.get("behaviour") or None
    return {name: value for name, value in options.items() if value is not None}

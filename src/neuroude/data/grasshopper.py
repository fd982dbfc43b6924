"""Locust auditory receptor neuron recordings shipped with the nitime package.

Two 10-second recordings of one auditory receptor neuron driven by a noise-amplitude-
modulated 2.5 kHz tone, from Rokem A, Watzl S, Gollisch T, Stemmler M, Herz AVM,
Samengo I (2006) "Spike-timing precision underlies the coding efficiency of auditory
receptor neurons", J Neurophysiol 95:2541-2552.

File format, as installed by nitime 0.10 under `nitime/data/`:
`grasshopper_spike_times{1,2}.txt` has 14 header lines starting with '#' ("# key: value")
followed by one spike time per line in microseconds. `grasshopper_stimulus{1,2}.txt` has
two columns, time in microseconds (step 50 us, 20 kHz) and the linear amplitude of the
tone, 200000 rows or 10 s.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from neuroude.data.recording import Recording
from neuroude.errors import ConfigError, DataFileError

RECORDING_DURATION = 10.0  # seconds in each stimulus file
SAMPLE_INTERVAL = 50e-6  # seconds between stimulus samples
CITATION = (
    "Rokem A, Watzl S, Gollisch T, Stemmler M, Herz AVM, Samengo I (2006). Spike-timing precision "
    "underlies the coding efficiency of auditory receptor neurons. J Neurophysiol 95:2541-2552."
)


def load_grasshopper(
    bin_width: float = 0.005, trial_duration: float = 1.0, recordings: tuple[int, ...] = (1, 2)
) -> Recording:
    """Load the locust receptor neuron as binned spike counts with a sound-level input.

    Each 10 s recording is cut into consecutive, non-overlapping trials of `trial_duration`
    seconds, and a last partial trial is dropped. Spikes are counted in bins of
    `bin_width` seconds. The input u is the sound level: the mean tone amplitude `a` in
    each bin, converted to dB (20 log10 a) and standardised to zero mean and unit variance
    over the used bins of each recording. The defaults give y and u of shape (20, 200, 1).

    ts contains the bin start times, from 0 within each trial. metadata["trial_info"] gives
    each trial's recording number and start time in that recording.

    Raises ConfigError for invalid arguments and DataFileError when nitime's data files
    are missing.
    """
    recordings = _validate_arguments(bin_width, trial_duration, recordings)
    data_folder = _find_data_folder()

    n_trials_per_recording = int(math.floor(RECORDING_DURATION / trial_duration + 1e-9))
    n_bins_per_trial = int(round(trial_duration / bin_width))
    used_duration = n_trials_per_recording * trial_duration
    n_bins = n_trials_per_recording * n_bins_per_trial

    counts, levels, headers, transforms = [], [], {}, {}
    trial_recording, trial_start = [], []
    for number in recordings:
        spike_times, header = _read_spike_times(data_folder / f"grasshopper_spike_times{number}.txt")
        sample_times, amplitude = _read_stimulus(data_folder / f"grasshopper_stimulus{number}.txt")

        binned_counts = _bin_spikes(spike_times, bin_width, n_bins)
        level, transform = _sound_level(sample_times, amplitude, bin_width, n_bins)

        counts.append(binned_counts.reshape(n_trials_per_recording, n_bins_per_trial))
        levels.append(level.reshape(n_trials_per_recording, n_bins_per_trial))
        headers[str(number)] = header
        transforms[str(number)] = transform
        trial_recording += [number] * n_trials_per_recording
        trial_start += [round(i * trial_duration, 9) for i in range(n_trials_per_recording)]

    metadata = {
        "source": "nitime package data: grasshopper_spike_times{1,2}.txt and grasshopper_stimulus{1,2}.txt",
        "citation": CITATION,
        "units": {"y": "spikes per bin", "u": "standardised dB", "ts": "s"},
        "channel_names": ["receptor neuron"],
        "input_names": ["sound level"],
        "bin_width": bin_width,
        "trial_duration": trial_duration,
        "used_duration_per_recording": used_duration,
        "stimulus_transform": {
            "description": "u = (20 * log10(mean amplitude in bin) - mean_db) / std_db, per recording",
            "per_recording": transforms,
        },
        "recording_headers": headers,
        "trial_info": {"recording": trial_recording, "start_s": trial_start},
    }
    return Recording(
        y=np.concatenate(counts)[:, :, None],
        ts=np.arange(n_bins_per_trial) * bin_width,
        u=np.concatenate(levels)[:, :, None],
        metadata=metadata,
    )


def _validate_arguments(bin_width: float, trial_duration: float, recordings: tuple[int, ...]) -> tuple[int, ...]:
    if not (isinstance(bin_width, (int, float)) and math.isfinite(bin_width) and bin_width >= SAMPLE_INTERVAL):
        raise ConfigError(f"bin_width is {bin_width!r}; expected seconds >= {SAMPLE_INTERVAL} (the stimulus sample interval)")
    if not (isinstance(trial_duration, (int, float)) and 0 < trial_duration <= RECORDING_DURATION):
        raise ConfigError(f"trial_duration is {trial_duration!r}; expected seconds in (0, {RECORDING_DURATION}]")

    bins_per_trial = trial_duration / bin_width
    if abs(bins_per_trial - round(bins_per_trial)) * bin_width > 1e-9:
        raise ConfigError(
            f"bin_width {bin_width} does not divide trial_duration {trial_duration}; "
            "expected trial_duration to be a whole number of bins"
        )

    try:
        numbers = tuple(int(number) for number in recordings)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"recordings is {recordings!r}; expected a sequence drawn from (1, 2)") from error
    if not numbers or not set(numbers) <= {1, 2} or len(set(numbers)) != len(numbers):
        raise ConfigError(f"recordings is {recordings!r}; expected a non-empty subset of (1, 2) without repeats")
    return numbers


def _find_data_folder() -> Path:
    # find_spec locates the package without importing it, which is slow.
    spec = importlib.util.find_spec("nitime")
    if spec is None or spec.origin is None:
        raise DataFileError("the nitime package is not installed; install it with `pip install nitime` to get the grasshopper data")

    folder = Path(spec.origin).parent / "data"
    expected = [folder / f"grasshopper_{kind}{n}.txt" for kind in ("spike_times", "stimulus") for n in (1, 2)]
    missing = [str(path) for path in expected if not path.is_file()]
    if missing:
        raise DataFileError(
            f"grasshopper data files not found: {missing}; reinstall nitime (`pip install --force-reinstall nitime`)"
        )
    return folder


def _read_spike_times(path: Path) -> tuple[np.ndarray, dict]:
    """Return spike times in seconds and the header fields, numbers parsed as floats."""
    header, values = {}, []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.strip()] = _parse_header_value(value.strip())
        elif line:
            values.append(float(line))
    return np.asarray(values) * 1e-6, header


def _parse_header_value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _read_stimulus(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return sample times in seconds and the tone amplitude."""
    try:
        table = np.array(path.read_text().split(), dtype=np.float64).reshape(-1, 2)
    except ValueError as error:
        raise DataFileError(f"{path} is not a two-column table of time (us) and amplitude: {error}") from error
    return table[:, 0] * 1e-6, table[:, 1]


def _bin_index(times: np.ndarray, bin_width: float) -> np.ndarray:
    # The small offset keeps a time that falls exactly on a bin edge in the later bin
    # despite rounding in the division.
    return np.floor(times / bin_width + 1e-9).astype(np.int64)


def _bin_spikes(spike_times: np.ndarray, bin_width: float, n_bins: int) -> np.ndarray:
    index = _bin_index(spike_times, bin_width)
    index = index[(index >= 0) & (index < n_bins)]
    return np.bincount(index, minlength=n_bins).astype(np.float32)


def _sound_level(
    sample_times: np.ndarray, amplitude: np.ndarray, bin_width: float, n_bins: int
) -> tuple[np.ndarray, dict]:
    """Return the standardised dB level of the mean amplitude in each bin, and the transform."""
    index = _bin_index(sample_times, bin_width)
    keep = (index >= 0) & (index < n_bins)
    total = np.bincount(index[keep], weights=amplitude[keep], minlength=n_bins)
    n_samples = np.bincount(index[keep], minlength=n_bins)

    level_db = 20.0 * np.log10(total / n_samples)
    mean_db, std_db = float(level_db.mean()), float(level_db.std())
    return (level_db - mean_db) / std_db, {"mean_db": mean_db, "std_db": std_db}

"""Write small NWB files with pynwb for the loader tests."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from pynwb import NWBHDF5IO, NWBFile, TimeSeries
from pynwb.behavior import Position

# Three units with spikes at known times, in seconds.
SPIKES = [
    [0.05, 0.15, 0.16, 0.95, 1.25],
    [0.50, 1.10, 1.85],
    [],
]
# Trial 0 lasts 1 s (10 bins of 0.1 s) and trial 1 lasts 0.8 s (8 bins).
TRIALS = [(0.0, 1.0, "train"), (1.1, 1.9, "test")]


def write_nwb(
    path,
    units: bool = True,
    trials: bool = True,
    heldout: bool = True,
    split: bool = True,
    series: bool = True,
    obs_intervals: list | None = None,
) -> None:
    """Write an NWB file with the units in SPIKES, the trials in TRIALS and two TimeSeries.

    acquisition/stimulus is 2 t sampled at 100 Hz from 0 to 3 s; processing/behavior contains
    a Position container with a two-column SpatialSeries "pos" = (t, -t) at irregular times.
    `obs_intervals`, when given, is one list of (start, stop) pairs per unit.
    """
    nwbfile = NWBFile(
        session_description="loader test",
        identifier="neuroude-test",
        session_start_time=datetime(2024, 1, 1, tzinfo=timezone.utc),
    )

    if units:
        if heldout:
            nwbfile.add_unit_column(name="heldout", description="unit held out for co-smoothing")
        for index, times in enumerate(SPIKES):
            extra = {"heldout": index == 1} if heldout else {}
            if obs_intervals is not None:
                extra["obs_intervals"] = obs_intervals[index]
            nwbfile.add_unit(spike_times=times, **extra)

    if trials:
        if split:
            nwbfile.add_trial_column(name="split", description="train, val or test")
        for start, stop, name in TRIALS:
            extra = {"split": name} if split else {}
            nwbfile.add_trial(start_time=start, stop_time=stop, **extra)

    if series:
        time = np.arange(301) / 100.0
        nwbfile.add_acquisition(TimeSeries(name="stimulus", data=2 * time, unit="V", rate=100.0, starting_time=0.0))

        times = np.sort(np.concatenate([[0.0, 3.0], np.random.default_rng(0).uniform(0, 3, 200)]))
        position = Position(name="Position")
        position.create_spatial_series(
            name="pos", data=np.stack([times, -times], axis=1), timestamps=times, reference_frame="origin", unit="m"
        )
        module = nwbfile.create_processing_module(name="behavior", description="tracked position")
        module.add(position)

    with NWBHDF5IO(str(path), mode="w") as io:
        io.write(nwbfile)

"""Figures of a run: training curves, held-out predictions against data, latent paths.

Every function writes one PNG and returns its path. The Agg backend is used so
figures render on machines without a display.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .runs import atomic_open  # noqa: E402


def _save(figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_open(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def plot_training(history: list[dict], evaluations: list[dict], path, metric_name: str) -> Path:
    """Plot the training history rows as `neuroude report` does, so both write the same training.png.

    `history` is one dict per step; `evaluations` ({"step", "validation_metric"}) fill the
    validation metric of rows that lack it.
    """
    from .report_plots import plot_training_history  # report_plots imports this module

    return plot_training_history(history_columns(history, evaluations), path, metric_name)


def history_columns(history: list[dict], evaluations: list[dict] = ()) -> dict[str, np.ndarray]:
    """Turn history rows into one float array per column, as `report.read_history` reads history.csv.

    A value a row lacks, or None, becomes NaN, and True/False become 1/0.
    """
    names = list(dict.fromkeys(name for row in history for name in row))
    columns = {
        name: np.array([np.nan if row.get(name) is None else float(row[name]) for row in history]) for name in names
    }
    metric_by_step = {int(entry["step"]): entry["validation_metric"] for entry in evaluations}
    if metric_by_step:
        metric = columns.get("validation_metric", np.full(len(history), np.nan))
        for index, step in enumerate(columns["step"]):
            if np.isnan(metric[index]) and metric_by_step.get(int(step)) is not None:
                metric[index] = metric_by_step[int(step)]
        columns["validation_metric"] = metric
    return columns


def _trial_labels(recording, trial_indices) -> list[str]:
    if trial_indices is None:
        return [f"trial {i}" for i in range(recording.n_trials)]
    return [f"trial {int(i)}" for i in trial_indices]


def _most_active_channels(recording, n_trials: int, max_channels: int) -> list[int]:
    """Return up to `max_channels` channel indices, the largest total |observation| over the first `n_trials`."""
    observed = np.abs(np.asarray(recording.y[:n_trials], np.float64))
    if recording.mask is not None:
        observed = np.where(np.asarray(recording.mask[:n_trials], bool), observed, 0.0)
    activity = np.nansum(observed, axis=(0, 1))
    # A stable sort keeps channel order among equally active channels, so a silent recording shows channels 0, 1, ...
    order = np.argsort(-activity, kind="stable")[:max_channels]
    return sorted(int(channel) for channel in order)


def _channel_label(channel_names, channel: int, unit: str) -> str:
    """Return the y label of a channel row: its name, with the index when the name does not contain it."""
    name = str(channel_names[channel])[:18]
    if name != f"channel {channel}":
        name = f"{name} (#{channel})"
    return f"{name}\n({unit})"


def plot_predictions(
    recording, prediction: dict, path, skip_bins: int, trial_indices=None, max_trials: int = 4, max_channels: int = 4
) -> Path:
    """Plot held-out observations with the predicted mean and a band of one standard deviation over samples.

    `trial_indices` are the trials' indices in the full recording, used in the panel titles.
    """
    n_trials = min(max_trials, recording.n_trials)
    active_channels = _most_active_channels(recording, n_trials, max_channels)
    n_channels = len(active_channels)
    has_stimulus = recording.u is not None
    rows = n_channels + int(has_stimulus)
    figure, axes = plt.subplots(rows, n_trials, figsize=(3.6 * n_trials, 1.9 * rows), squeeze=False, sharex=True)
    ts = recording.ts - recording.ts[0]
    metadata = recording.metadata
    channel_names = metadata.get("channel_names") or [f"channel {i}" for i in range(recording.n_channels)]
    input_names = metadata.get("input_names") or ["stimulus"]
    is_counts = prediction.get("observation", "poisson") == "poisson"
    unit = "counts per bin" if is_counts else "value"
    labels = _trial_labels(recording, trial_indices)

    for trial in range(n_trials):
        axes[0, trial].set_title(f"held-out {labels[trial]}")
        if has_stimulus:
            axes[0, trial].plot(ts, recording.u[trial], color="0.3", lw=0.8)
            if trial == 0:
                axes[0, 0].set_ylabel(str(input_names[0])[:18])
        for row, channel in enumerate(active_channels):
            axis = axes[row + int(has_stimulus), trial]
            mean = prediction["mean"][trial, :, channel]
            std = prediction["std"][trial, :, channel]
            if is_counts:
                axis.bar(ts, recording.y[trial, :, channel], width=recording.dt, color="0.75", label="data")
            else:
                axis.plot(ts, recording.y[trial, :, channel], color="0.5", lw=0.8, label="data")
            axis.plot(ts, mean, color="C3", lw=1.0, label="predicted mean")
            axis.fill_between(ts, mean - std, mean + std, color="C3", alpha=0.3, lw=0, label="±1 SD over samples")
            axis.axvspan(ts[0], ts[min(skip_bins, len(ts) - 1)], color="C0", alpha=0.12, lw=0)
            if trial == 0:
                axis.set_ylabel(_channel_label(channel_names, channel, unit))

    axes[-1, 0].set_xlabel("time in trial (s)")
    axes[int(has_stimulus), 0].legend(frameon=False, fontsize=7)
    conditioned = "the stimulus and the first bins" if has_stimulus else "the first bins alone (no stimulus)"
    chosen = "" if n_channels == recording.n_channels else (
        f"; the {n_channels} of {recording.n_channels} channels with the most activity in these trials"
    )
    figure.suptitle(
        f"held-out predictions from {conditioned}{chosen}\n"
        f"(blue: first {skip_bins} bins, used to infer the initial state and not scored)",
        fontsize=9,
    )
    figure.tight_layout()
    return _save(figure, path)


def plot_latents(paths: np.ndarray, ts: np.ndarray, path, trial_indices=None, max_trials: int = 4) -> Path:
    """Plot the first two latent dimensions of the mean sampled path, one colour per trial."""
    figure, (axis_time, axis_plane) = plt.subplots(1, 2, figsize=(10, 4))
    ts = ts - ts[0]
    n_trials = min(max_trials, paths.shape[0])
    labels = [f"trial {int(i)}" for i in trial_indices] if trial_indices is not None else None

    for trial in range(n_trials):
        colour = f"C{trial % 10}"
        label = labels[trial] if labels else f"trial {trial}"
        mean_path = paths[trial].mean(axis=0)
        axis_time.plot(ts, mean_path[:, 0], color=colour, lw=0.8, label=label)
        if paths.shape[-1] > 1:
            axis_plane.plot(mean_path[:, 0], mean_path[:, 1], color=colour, lw=0.6, alpha=0.7)
            axis_plane.plot(mean_path[0, 0], mean_path[0, 1], "o", color=colour, ms=5)

    axis_time.set_title("latent 1 over time (mean over prior samples)")
    axis_time.set_xlabel("time in trial (s)")
    axis_time.set_ylabel("latent 1")
    axis_time.legend(frameon=False, fontsize=7)
    axis_plane.set_xlabel("latent 1")
    axis_plane.set_ylabel("latent 2")
    axis_plane.set_title("latent plane (dot: inferred initial state x0)")
    figure.tight_layout()
    return _save(figure, path)


def plot_calibration(decoding: dict, path) -> Path:
    """Plot the empirical coverage of each decoder's central predictive intervals against their nominal level.

    `decoding` is the `behaviour_decoding` record of `metrics.json`; a calibrated decoder lies on the diagonal.
    """
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="calibrated")
    for method in ("ridge", "behaviour_head"):
        if method not in decoding:
            continue
        curve = decoding[method]["calibration"]
        label = f"{method.replace('_', ' ')} (R^2 {decoding[method]['r_squared']['mean']:.2f})"
        axis.plot(curve["nominal"], curve["empirical"], marker="o", ms=3, label=label)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("nominal interval level")
    axis.set_ylabel("fraction of test behaviour inside")
    axis.set_title("calibration of decoded behaviour, test trials")
    axis.legend(loc="upper left", fontsize=8)
    return _save(figure, path)


# Unit suffixes of behaviour names ("x_px", "speed_px_per_s"), written out on the axis labels.
UNIT_SUFFIXES = ("px_per_s", "cm_per_s", "m_per_s", "mm_per_s", "deg_per_s", "rad_per_s", "px", "cm", "mm", "m",
                 "deg", "rad", "s", "hz")


def behaviour_label(name: str) -> str:
    """Return an axis label for a behaviour name, its unit suffix in brackets: "speed_px_per_s" -> "speed (px/s)"."""
    for suffix in UNIT_SUFFIXES:
        stem = name[: -len(suffix) - 1]
        if name.lower().endswith("_" + suffix) and stem:
            return f"{stem} ({name[len(stem) + 1:].replace('_per_', '/')})"
    return name


def plot_behaviour(recording, prediction, path, names: list[str], skip_bins: int, trial_indices=None,
                   max_trials: int = 3, level: float = 0.9) -> Path:
    """Plot recorded behaviour of test trials against the behaviour head's prediction, one row per variable.

    `prediction` is a `decoding.BehaviourPrediction` of `recording`'s trials, in the recording's
    units. Entries where `behaviour_mask` is False are not drawn.
    """
    n_trials = min(max_trials, recording.n_trials)
    n_variables = recording.behaviour.shape[2]
    figure, axes = plt.subplots(n_variables, n_trials, figsize=(3.8 * n_trials, 1.9 * n_variables + 0.8),
                                squeeze=False, sharex=True)
    ts = recording.ts - recording.ts[0]
    recorded = np.where(recording.behaviour_observed, recording.behaviour, np.nan)
    mean = prediction.mean
    lower, upper = prediction.interval(level)
    labels = _trial_labels(recording, trial_indices)

    for trial in range(n_trials):
        axes[0, trial].set_title(f"test {labels[trial]}", fontsize=9)
        for variable in range(n_variables):
            axis = axes[variable, trial]
            axis.plot(ts, recorded[trial, :, variable], color="0.2", lw=1.0, label="recorded")
            axis.plot(ts, mean[trial, :, variable], color="C3", lw=1.0, label="predicted mean")
            axis.fill_between(ts, lower[trial, :, variable], upper[trial, :, variable], color="C3", alpha=0.25,
                              lw=0, label=f"{100 * level:g}% interval")
            axis.axvspan(ts[0], ts[min(skip_bins, len(ts) - 1)], color="C0", alpha=0.12, lw=0)
            if trial == 0:
                axis.set_ylabel(behaviour_label(str(names[variable])))
        axes[-1, trial].set_xlabel("time in trial (s)")

    axes[0, 0].legend(frameon=False, fontsize=7)
    figure.suptitle(
        "behaviour on test trials: recorded, and the behaviour head's prediction from posterior latent paths\n"
        f"(mean and {100 * level:g}% interval; blue: first {skip_bins} bins, not scored)",
        fontsize=9,
    )
    figure.tight_layout()
    return _save(figure, path)

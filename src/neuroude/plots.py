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
    """Plot each ELBO term, beta and the validation metric against the step."""
    steps = np.array([row["step"] for row in history])
    figure, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    panels = [
        ("loss", "negative ELBO per trial"),
        ("log_likelihood", "expected log-likelihood per trial"),
        ("kl_path", "KL per trial"),
    ]
    for axis, (name, title) in zip(axes.flat[:3], panels):
        axis.plot(steps, [row[name] for row in history], lw=0.8)
        if name == "kl_path":
            axis.plot(steps, [row["kl_initial"] for row in history], lw=0.8, label="initial state")
            axis.lines[0].set_label("path")
            axis.legend(frameon=False)
        axis.set_title(title)
    axis = axes.flat[3]
    if evaluations:
        axis.plot([e["step"] for e in evaluations], [e["validation_metric"] for e in evaluations], "o-")
    axis.set_title(f"validation {metric_name}")
    for axis in axes[1]:
        axis.set_xlabel("step")
    figure.tight_layout()
    return _save(figure, path)


def plot_predictions(recording, prediction: dict, path, skip_bins: int, max_trials: int = 4, max_channels: int = 4) -> Path:
    """Plot held-out observations with the predicted mean and a band of one standard deviation over samples."""
    n_trials = min(max_trials, recording.n_trials)
    n_channels = min(max_channels, recording.n_channels)
    has_stimulus = recording.u is not None
    rows = n_channels + int(has_stimulus)
    figure, axes = plt.subplots(rows, n_trials, figsize=(3.6 * n_trials, 1.9 * rows), squeeze=False, sharex=True)
    ts = recording.ts - recording.ts[0]
    channel_names = recording.metadata.get("channel_names") or [f"channel {i}" for i in range(recording.n_channels)]
    for trial in range(n_trials):
        if has_stimulus:
            axes[0, trial].plot(ts, recording.u[trial], color="0.3", lw=0.8)
            axes[0, trial].set_title(f"held-out trial {trial}")
        for channel in range(n_channels):
            axis = axes[channel + int(has_stimulus), trial]
            mean = prediction["mean"][trial, :, channel]
            std = prediction["std"][trial, :, channel]
            axis.bar(ts, recording.y[trial, :, channel], width=recording.dt, color="0.75", label="data")
            axis.plot(ts, mean, color="C3", lw=1.0, label="predicted")
            axis.fill_between(ts, mean - std, mean + std, color="C3", alpha=0.25, lw=0)
            axis.axvspan(ts[0], ts[min(skip_bins, len(ts) - 1)], color="C0", alpha=0.08)
            if trial == 0:
                axis.set_ylabel(str(channel_names[channel])[:18])
    axes[-1, 0].set_xlabel("time in trial (s)")
    axes[int(has_stimulus), 0].legend(frameon=False, fontsize=7)
    figure.suptitle("held-out predictions (shaded start: bins used to infer x0, not scored)", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_latents(paths: np.ndarray, ts: np.ndarray, path, max_trials: int = 6) -> Path:
    """Plot the first two latent dimensions of sampled paths, one colour per trial."""
    figure, (axis_time, axis_plane) = plt.subplots(1, 2, figsize=(10, 4))
    ts = ts - ts[0]
    for trial in range(min(max_trials, paths.shape[0])):
        colour = f"C{trial % 10}"
        mean_path = paths[trial].mean(axis=0)
        axis_time.plot(ts, mean_path[:, 0], color=colour, lw=0.9)
        if paths.shape[-1] > 1:
            axis_plane.plot(mean_path[:, 0], mean_path[:, 1], color=colour, lw=0.9)
            axis_plane.plot(mean_path[0, 0], mean_path[0, 1], "o", color=colour, ms=3)
    axis_time.set_xlabel("time in trial (s)")
    axis_time.set_ylabel("latent 1 (mean over samples)")
    axis_plane.set_xlabel("latent 1")
    axis_plane.set_ylabel("latent 2")
    axis_plane.set_title("latent paths (dot: inferred x0)")
    figure.tight_layout()
    return _save(figure, path)

"""Figures of the run report: data, training curves, latent paths, initial states, diffusion, constants.

Every function takes plain NumPy arrays and dictionaries, writes one PNG
atomically and returns its path. `report.py` computes what they plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .plots import _save, plt

SPLIT_COLOURS = {"train": "0.6", "validation": "C0", "test": "C3"}


def plot_data_overview(recording, path, observation: str, max_trials: int = 3) -> Path:
    """Plot the first trials of a recording: the stimulus above, spike counts as a raster or traces below."""
    n_trials = min(max_trials, recording.n_trials)
    has_stimulus = recording.u is not None
    rows = 1 + int(has_stimulus)
    heights = [1, 2.5] if has_stimulus else [1]
    figure, axes = plt.subplots(
        rows, n_trials, figsize=(3.8 * n_trials, 1.4 + 1.6 * rows), squeeze=False,
        gridspec_kw={"height_ratios": heights}, sharex=True, layout="constrained",
    )
    # One colour scale for all rasters, so a single spike has the same shade in every panel.
    largest_count = max(float(np.nanmax(recording.y[:n_trials])), 1.0)
    image = None
    ts = recording.ts - recording.ts[0]
    input_names = recording.metadata.get("input_names") or [f"input {i}" for i in range(recording.n_inputs)]
    extent = (ts[0], ts[-1] + recording.dt, recording.n_channels - 0.5, -0.5)

    for trial in range(n_trials):
        if has_stimulus:
            axis = axes[0, trial]
            for index in range(min(recording.n_inputs, 4)):
                axis.plot(ts, recording.u[trial, :, index], lw=0.8, label=str(input_names[index])[:24])
            axis.set_title(f"trial {trial}")
            if trial == 0:
                axis.set_ylabel("stimulus")
                axis.legend(frameon=False, fontsize=7)
        axis = axes[-1, trial]
        if not has_stimulus:
            axis.set_title(f"trial {trial}")
        if observation == "poisson":
            image = axis.imshow(recording.y[trial].T, aspect="auto", cmap="Greys", extent=extent,
                                interpolation="nearest", vmin=0, vmax=largest_count)
            axis.set_ylabel("channel")
            if recording.n_channels <= 10:
                axis.set_yticks(range(recording.n_channels))
        else:
            offsets = 3.0 * np.arange(recording.n_channels)
            scale = np.nanstd(recording.y[trial]) or 1.0
            axis.plot(ts, recording.y[trial] / scale + offsets, lw=0.6, color="0.2")
            axis.set_ylabel("channel (standardised, offset)")
        axis.set_xlabel("time in trial (s)")
    if image is not None:
        figure.colorbar(image, ax=list(axes[-1]), label="counts per bin", fraction=0.05)
    figure.suptitle(f"recorded data: {_count(recording.n_trials, 'trial')}, {_count(recording.n_channels, 'channel')}, "
                    f"bins of {recording.dt:g} s", fontsize=9)
    return _save(figure, path)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


# Fixed colours, so a term keeps its colour whether or not the other terms are drawn.
KL_COLOURS = {"kl_initial": "C1", "kl_path": "C0", "residual_penalty": "C2"}

TRAINING_PANELS = (
    ("loss", "negative ELBO per trial"),
    ("log_likelihood", "expected log-likelihood per trial"),
    ("kl", "KL per trial"),
    ("beta", "KL weight beta"),
    ("validation_metric", "validation metric"),
    ("learning_rate", "learning rate"),
    ("grad_norm", "gradient norm (before clipping)"),
    ("skipped_steps", "skipped steps, non-finite or solver error (cumulative)"),
)


def plot_training_history(history: dict[str, np.ndarray], path, metric_name: str) -> Path:
    """Plot every column of `history.csv` against the step, one panel per quantity.

    `history` maps column names to arrays of one value per step (NaN where a
    value was not recorded, such as the validation metric between evaluations).
    A column that the history lacks leaves its panel with a note.
    """
    steps = history["step"]
    figure, axes = plt.subplots(2, 4, figsize=(14, 5.5), sharex=True)
    for axis, (name, title) in zip(axes.flat, TRAINING_PANELS):
        axis.set_title(title if name != "validation_metric" else f"validation {metric_name}", fontsize=9)
        if name == "kl":
            for column, label in (("kl_initial", "initial state"), ("kl_path", "path"),
                                  ("residual_penalty", "residual penalty")):
                if column in history and np.any(history[column] != 0):
                    axis.plot(steps, history[column], lw=0.8, label=label, color=KL_COLOURS[column])
            axis.legend(frameon=False, fontsize=7)
            continue
        if name not in history:
            axis.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=axis.transAxes, color="0.5")
            continue
        values = history[name]
        if name == "validation_metric":
            evaluated = np.isfinite(values)
            axis.plot(steps[evaluated], values[evaluated], "o-", ms=3)
        else:
            axis.plot(steps, values, lw=0.8)
        if name == "skipped_steps" and not np.nanmax(values, initial=0.0) > 0:
            # Without this, matplotlib centres a flat zero line on a -0.04..0.04 axis.
            axis.set_ylim(0, 1)
    for axis in axes[1]:
        axis.set_xlabel("step")
    figure.tight_layout()
    return _save(figure, path)


def _group_colours(labels: list[str]) -> dict[str, str]:
    return {label: f"C{index % 10}" for index, label in enumerate(dict.fromkeys(labels))}


def plot_latent_paths(paths: np.ndarray, ts: np.ndarray, labels: list[str], path, title: str) -> Path:
    """Plot the mean prior path of each trial over time and in the plane of latents 1 and 2.

    `paths` is (trials, samples, time, latents); `labels` gives each trial's
    group (condition or trial name), and trials of one group share a colour.
    """
    colours = _group_colours(labels)
    mean_paths = paths.mean(axis=1)
    n_latents = paths.shape[-1]
    figure, (axis_time, axis_plane) = plt.subplots(1, 2, figsize=(11, 4))
    ts = ts - ts[0]

    seen = set()
    for trial, label in enumerate(labels):
        colour = colours[label]
        legend_label = None if label in seen else label
        seen.add(label)
        axis_time.plot(ts, mean_paths[trial, :, 0], color=colour, lw=0.8, alpha=0.8, label=legend_label)
        if n_latents > 1:
            axis_plane.plot(mean_paths[trial, :, 0], mean_paths[trial, :, 1], color=colour, lw=0.6, alpha=0.7)
            axis_plane.plot(mean_paths[trial, 0, 0], mean_paths[trial, 0, 1], "o", color=colour, ms=4)

    axis_time.set_xlabel("time in trial (s)")
    axis_time.set_ylabel("latent 1")
    axis_time.set_title("latent 1 over time (mean over prior samples)", fontsize=9)
    axis_time.legend(frameon=False, fontsize=7)
    if n_latents > 1:
        axis_plane.set_xlabel("latent 1")
        axis_plane.set_ylabel("latent 2")
        axis_plane.set_title("plane of latents 1 and 2 (dot: start)", fontsize=9)
    else:
        axis_plane.set_axis_off()
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_initial_states(mean: np.ndarray, std: np.ndarray, splits: list[str], path) -> Path:
    """Plot the mean of `q(x0 | y)` of every trial with error bars of one standard deviation, by split."""
    n_latents = mean.shape[1]
    figure, axis = plt.subplots(figsize=(5.5, 4.5))
    splits = np.asarray(splits)
    for name, colour in SPLIT_COLOURS.items():
        chosen = splits == name
        if not np.any(chosen):
            continue
        if n_latents > 1:
            axis.errorbar(mean[chosen, 0], mean[chosen, 1], xerr=std[chosen, 0], yerr=std[chosen, 1],
                          fmt="o", ms=4, color=colour, lw=0.6, alpha=0.8, label=f"{name} ({int(chosen.sum())})")
        else:
            trials = np.flatnonzero(chosen)
            axis.errorbar(trials, mean[chosen, 0], yerr=std[chosen, 0], fmt="o", ms=4, color=colour, lw=0.6,
                          label=f"{name} ({int(chosen.sum())})")
    if n_latents > 1:
        axis.set_xlabel("x0, latent 1")
        axis.set_ylabel("x0, latent 2")
    else:
        axis.set_xlabel("trial")
        axis.set_ylabel("x0")
    axis.legend(frameon=False, fontsize=8)
    axis.set_title("inferred initial states: mean ± 1 SD of q(x0 | y)", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_diffusion(grid: dict, path) -> Path:
    """Plot the diagonal diffusion sigma_i over a grid of latents 1 and 2, with the mean paths on top.

    `grid` contains `axes` (one or two 1-D coordinate arrays), `sigma`
    (grid shape + (panels,)) for the first latents, and `paths` (trials, time, latents).
    """
    coordinates = grid["axes"]
    sigma = grid["sigma"]
    panels = sigma.shape[-1]
    figure, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)

    for index in range(panels):
        axis = axes[0, index]
        if len(coordinates) == 1:
            axis.plot(coordinates[0], sigma[:, index])
            axis.set_xlabel("latent 1")
            axis.set_ylabel(f"sigma_{index + 1}")
        else:
            mesh = axis.pcolormesh(coordinates[0], coordinates[1], sigma[:, :, index].T, shading="auto",
                                   cmap="viridis")
            figure.colorbar(mesh, ax=axis, label=f"sigma_{index + 1}")
            for trial_path in grid["paths"]:
                axis.plot(trial_path[:, 0], trial_path[:, 1], color="white", lw=0.5, alpha=0.6)
            axis.set_xlabel("latent 1")
            axis.set_ylabel("latent 2")
        low, high = float(np.min(sigma[..., index])), float(np.max(sigma[..., index]))
        axis.set_title(f"diffusion sigma_{index + 1}: {low:.3g} to {high:.3g}", fontsize=9)
    figure.suptitle("learned diffusion over the state space (other latents at their mean, drive at its mean)",
                    fontsize=9)
    figure.tight_layout()
    return _save(figure, path)


def plot_constants(rows: list[dict], path, max_panels: int = 24) -> Path:
    """Plot each mechanistic constant's default, initial and fitted value in its own small panel.

    Each row of `rows` has `name`, `default` (None when unknown), `initial`
    and `fitted`; vector constants (one value per network node) are drawn
    against the node index.
    """
    rows = rows[:max_panels]
    columns = min(4, len(rows))
    n_rows = -(-len(rows) // columns)
    figure, axes = plt.subplots(n_rows, columns, figsize=(3.2 * columns, 2.4 * n_rows), squeeze=False)

    for axis, row in zip(axes.flat, rows):
        initial = np.atleast_1d(row["initial"])
        fitted = np.atleast_1d(row["fitted"])
        if initial.size == 1:
            labels = ["default", "initial", "fitted"]
            default = np.nan if row["default"] is None else row["default"]
            values = [default, float(initial[0]), float(fitted[0])]
            axis.bar(labels, values, color=["0.75", "C0", "C3"])
            axis.axhline(0, color="0.3", lw=0.5)
        else:
            axis.plot(initial, "o", color="C0", ms=3, label="initial")
            axis.plot(fitted, "o", color="C3", ms=3, label="fitted")
            if row["default"] is not None:
                axis.axhline(row["default"], color="0.5", lw=0.8, ls="--", label="default")
            axis.set_xlabel("node")
            axis.legend(frameon=False, fontsize=6)
        frozen = "" if row["learnable"] else " (frozen)"
        axis.set_title(f"{row['name']}{frozen}", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(rows):]:
        axis.set_axis_off()
    figure.suptitle("mechanistic constants: published default, initial (from the config) and fitted", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)

"""Input design on a fitted run: read a target file, design the stimulus, write the results into the run folder.

This is what `neuroude control RUN_DIR --target FILE` calls. The target is a
latent trajectory (time, latents) or a rate trajectory (time, channels) in
expected observations per bin, stored as .npy or .csv, with NaN where there is
no target. The designed stimulus lies within the range of the recorded
stimulus unless bounds are given. The outputs are `control.npz`,
`control.json` and `figures/control.png` in the run folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .control import (
    OUTPUT_SPACES,
    ControlledSystem,
    ControlSettings,
    RecognitionEstimator,
    design_open_loop,
    receding_horizon,
)
from .errors import ConfigError, DataError, DataFileError
from .runs import atomic_open, write_json

logger = logging.getLogger("neuroude")

MODES = ("open_loop", "receding_horizon")

CONTROL_DESCRIPTION = (
    "input: (time, inputs) designed stimulus; ts: (time,) seconds; target: (time, outputs), NaN where none; "
    "output_mean, output_std: (time, outputs) controlled output over noise samples; "
    "latent_mean, latent_std: (time, latents) latent paths over noise samples; space: 'latent' or 'rate'"
)


def load_target(path: str | os.PathLike) -> np.ndarray:
    """Read a (time, outputs) target from .npy (no pickled objects) or .csv (comma-separated, no header).

    A 1-D file is read as one output over time. Raises DataFileError for a
    missing or unreadable file and DataError for one that is not numeric.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"target file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".csv":
            array = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        else:
            raise DataFileError(f"target file {path} has suffix {suffix!r}; expected .npy or .csv")
    except (ValueError, OSError) as error:
        raise DataFileError(f"target file {path} could not be read as a numeric array: {error}") from None
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"target file {path} contains {array.dtype} values; expected numbers")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"target file {path} has shape {array.shape}; expected (time, outputs)")
    return array.astype(np.float32)


def choose_space(target: np.ndarray, latent_size: int, n_channels: int, space: str | None) -> str:
    """Return the output space the target's width matches, checking an explicit `space`.

    Raises DataError when the width matches neither the latent states nor the
    channels, or not the `space` requested, and ConfigError when it matches
    both and no `space` was given.
    """
    width = target.shape[1]
    sizes = {"latent": latent_size, "rate": n_channels}
    if space is not None:
        if space not in OUTPUT_SPACES:
            raise ConfigError(f"space is {space!r}; expected one of {OUTPUT_SPACES}")
        if width != sizes[space]:
            raise DataError(
                f"target has {width} columns; the model's {space} output has {sizes[space]} "
                f"(latent states: {latent_size}, channels: {n_channels})"
            )
        return space
    matches = [name for name, size in sizes.items() if size == width]
    if not matches:
        raise DataError(
            f"target has {width} columns; expected {latent_size} (one per latent state) "
            f"or {n_channels} (one rate per recorded channel)"
        )
    if len(matches) == 2:
        raise ConfigError(
            f"target has {width} columns, which matches both the latent states and the channels; "
            "choose one with --space latent or --space rate"
        )
    return matches[0]


def _default_bounds(recording, train_indices) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stimulus = np.asarray(recording.u)[np.asarray(train_indices)]
    lower = stimulus.min(axis=(0, 1))
    upper = stimulus.max(axis=(0, 1))
    # A channel that never varied gets a unit range, so the bounds stay valid.
    upper = np.where(upper > lower, upper, lower + 1.0)
    return tuple(float(v) for v in lower), tuple(float(v) for v in upper)


def control_run(
    run_dir: str | os.PathLike,
    target_path: str | os.PathLike,
    space: str | None = None,
    mode: str = "open_loop",
    trial: int = 0,
    u_min: float | None = None,
    u_max: float | None = None,
    smoothness: float = 1e-3,
    energy: float = 1e-4,
    n_samples: int = 16,
    n_iterations: int = 200,
    learning_rate: float = 0.1,
    horizon: int = 10,
    control_interval: int = 2,
    seed: int = 0,
) -> dict:
    """Design a stimulus that drives a fitted run's model towards the target; write and return the summary.

    The initial state is inferred by the recognition model from the first
    bins of test trial `trial`. The target starts at that trial's first bin and
    the bin width is the recording's. `mode` "open_loop" designs the whole
    input at once from the posterior of the initial state. "receding_horizon"
    controls the fitted model as a simulated plant and re-plans from the
    recognition model's estimate of the present state.
    """
    from .workflow import load_run

    if mode not in MODES:
        raise ConfigError(f"mode is {mode!r}; expected one of {MODES}")
    target = load_target(target_path)
    run = load_run(run_dir)
    model, recording = run.model, run.recording
    if recording.u is None:
        raise ConfigError(f"the run in {run.folder.root} was fitted without a stimulus, so it has no input to control")
    space = choose_space(target, model.latent_size, recording.n_channels, space)
    test_trials = run.split["test"]
    if not 0 <= trial < len(test_trials):
        raise ConfigError(f"trial is {trial}; the run has {len(test_trials)} test trials (0 to {len(test_trials) - 1})")

    default_lower, default_upper = _default_bounds(recording, run.split["train"])
    settings = ControlSettings(
        u_min=default_lower if u_min is None else u_min,
        u_max=default_upper if u_max is None else u_max,
        smoothness=smoothness, energy=energy, n_samples=n_samples, n_iterations=n_iterations,
        learning_rate=learning_rate,
    )
    system = ControlledSystem.from_model(model, space)
    settings.bounds(system.input_size)

    index = test_trials[trial]
    y = jnp.asarray(recording.y[index], jnp.float32)
    stimulus = jnp.asarray(recording.u[index], jnp.float32)
    readable = model.recognition_input(y, jnp.asarray(recording.observed[index]))
    mean0, std0 = model.recognition.initial_state(readable, model.encode(stimulus))
    t0, bin_width = float(recording.ts[0]), float(recording.dt)
    key = jax.random.PRNGKey(seed)

    if mode == "open_loop":
        result = design_open_loop(system, np.asarray(mean0), target, settings, t0, bin_width, key, x0_std=std0)
        paths, outputs = result.paths, result.outputs
    else:
        key_x0, key_control = jax.random.split(key)
        true_x0 = mean0 + std0 * jax.random.normal(key_x0, mean0.shape)
        result = receding_horizon(
            system, np.asarray(true_x0), target, settings, t0, bin_width, key_control, horizon, control_interval,
            estimator=RecognitionEstimator(model),
        )
        paths, outputs = result.states[None], result.outputs[None]

    summary = {
        "mode": mode,
        "space": space,
        "trial": int(index),
        "bins": int(target.shape[0]),
        "bin_width": bin_width,
        "u_min": list(np.broadcast_to(settings.bounds(system.input_size)[0], (system.input_size,)).tolist()),
        "u_max": list(np.broadcast_to(settings.bounds(system.input_size)[1], (system.input_size,)).tolist()),
        "settings": {"smoothness": smoothness, "energy": energy, "n_samples": n_samples,
                     "n_iterations": n_iterations, "learning_rate": learning_rate, "seed": seed,
                     **({"horizon": horizon, "control_interval": control_interval} if mode != "open_loop" else {})},
        "terms": result.terms,
    }
    _write_outputs(run.folder, result, paths, outputs, space, summary)
    return summary


def _write_outputs(folder, result, paths, outputs, space: str, summary: dict) -> None:
    arrays = {
        "input": result.input,
        "ts": result.ts,
        "target": result.target,
        "output_mean": outputs.mean(axis=0),
        "output_std": outputs.std(axis=0),
        "latent_mean": paths.mean(axis=0),
        "latent_std": paths.std(axis=0),
        "space": np.asarray(space),
        "description": np.asarray(CONTROL_DESCRIPTION),
    }
    with atomic_open(folder.root / "control.npz", "wb") as stream:
        np.savez(stream, **arrays)
    write_json(folder.root / "control.json", summary)
    plot_control(arrays, folder.figures / "control.png")
    logger.info("control results written to %s", folder.root)


def plot_control(arrays: dict, path) -> Path:
    """Plot the designed input and each controlled output (mean and one standard deviation) against its target."""
    from .plots import _save, plt

    ts = arrays["ts"]
    n_outputs = arrays["target"].shape[1]
    figure, axes = plt.subplots(n_outputs + 1, 1, figsize=(7, 1.8 * (n_outputs + 1)), sharex=True, squeeze=False)
    axes = axes[:, 0]
    axes[0].step(ts, arrays["input"], where="post")
    axes[0].set_ylabel("input")
    label = "rate (per bin)" if str(arrays["space"]) == "rate" else "latent"
    for j in range(n_outputs):
        mean, std = arrays["output_mean"][:, j], arrays["output_std"][:, j]
        axes[j + 1].plot(ts, mean, color="C0", label="controlled")
        axes[j + 1].fill_between(ts, mean - std, mean + std, color="C0", alpha=0.3)
        axes[j + 1].plot(ts, arrays["target"][:, j], color="k", linestyle="--", label="target")
        axes[j + 1].set_ylabel(f"{label} {j}")
    axes[1].legend(loc="upper right", fontsize="small")
    axes[-1].set_xlabel("time (s)")
    return _save(figure, path)

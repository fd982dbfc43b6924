"""Analyse a fitted run folder: fixed points and phase portraits per input level, optional continuation.

`analyze_run` is what `neuroude analyze` calls. It writes
`figures/phase_portrait_<i>.png` for each input level,
`figures/continuation.png` when a continuation range is given, and
`analysis.json` with the numbers behind the figures.
"""

from __future__ import annotations

import logging
import os

import jax
import numpy as np

from ..errors import ConfigError
from ..runs import write_json
from ..workflow import load_run
from .continuation import Branch, continue_equilibria
from .fitted import encode_constant_input, input_level_family, prior_diffusion, prior_drift, visited_states
from .fixed_points import find_fixed_points, visited_starts
from .noise import simulate
from .phase import default_projection, plot_branches, plot_phase_portrait

logger = logging.getLogger("neuroude")

N_SAMPLE_PATHS = 8
MAX_BRANCHES = 4


def _default_levels(recording) -> list[np.ndarray]:
    """Return one level, the mean stimulus of the recording (an empty vector when it has none)."""
    if recording.u is None:
        return [np.zeros((0,), np.float32)]
    return [recording.u.reshape(-1, recording.n_inputs).mean(axis=0)]


def _sample_paths(model, u, starts, recording, key) -> np.ndarray:
    """Simulate the prior SDE at drive `u` from `starts` for one trial's duration, at the model's solver step."""
    dt = float(recording.dt) / model.n_substeps
    duration = dt * model.n_substeps * (recording.n_time - 1)
    paths = simulate(prior_drift(model), prior_diffusion(model), u, starts, dt, duration, key, model.n_substeps)
    return np.asarray(paths)


def _analyse_level(run, index: int, stimulus, visited, projection, n_starts: int, key) -> dict:
    model, recording = run.model, run.recording
    u = encode_constant_input(model, stimulus, recording.n_inputs)
    key_starts, key_paths, key_samples = jax.random.split(key, 3)
    starts = visited_starts(visited, n_starts, key_starts, jitter=0.5)
    points = find_fixed_points(prior_drift(model), u, starts)
    sample_starts = visited_starts(visited, N_SAMPLE_PATHS, key_samples, jitter=0.0)
    paths = _sample_paths(model, u, sample_starts, recording, key_paths)

    figure = run.folder.figures / f"phase_portrait_{index}.png"
    values = ", ".join(f"{value:.3g}" for value in np.atleast_1d(stimulus))
    plot_phase_portrait(prior_drift(model), u, figure, points, paths, projection, title=f"stimulus ({values})")
    logger.info("stimulus (%s): %d fixed or slow points", values, len(points))
    return {
        "stimulus": np.atleast_1d(stimulus).astype(float).tolist(),
        "drive": np.asarray(u, float).tolist(),
        "points": [point.to_dict() for point in points],
        "figure": str(figure.relative_to(run.folder.root)),
    }


def _continuation(run, visited, low: float, high: float, n_starts: int, key) -> list[Branch]:
    """Follow the equilibria found at stimulus level `low` (on every input channel) up to `high`."""
    model, recording = run.model, run.recording
    if recording.n_inputs == 0:
        raise ConfigError("the recording has no stimulus, so there is no input level to continue in; drop --continuation")
    direction = np.ones((recording.n_inputs,), np.float32)
    u_low = encode_constant_input(model, low * direction, recording.n_inputs)
    starts = visited_starts(visited, n_starts, key, jitter=0.5)
    points = [point for point in find_fixed_points(prior_drift(model), u_low, starts) if point.kind == "fixed point"]

    family = input_level_family(model, direction)
    step = abs(high - low) / 50.0
    branches = []
    for point in points[:MAX_BRANCHES]:
        if any(_on_branch(point.state, branch, low) for branch in branches):
            continue
        try:
            branches.append(continue_equilibria(family, point.state, low, high, step=step, max_points=400))
        except ConfigError as error:
            logger.warning("continuation from %s failed: %s", point.state.tolist(), error)
    return branches


def _on_branch(state: np.ndarray, branch: Branch, level: float) -> bool:
    """Tell whether `state` is an equilibrium of `branch` at `level`, such as the far end of an S-shaped branch."""
    at_level = branch.states[np.isclose(branch.parameters, level, rtol=0.0, atol=1e-9)]
    distances = np.linalg.norm(at_level - state, axis=1)
    return bool(np.any(distances < 1e-3 * (1.0 + np.linalg.norm(state))))


def analyze_run(
    path: str | os.PathLike,
    levels: list | None = None,
    continuation: tuple[float, float] | None = None,
    n_starts: int = 64,
    seed: int = 0,
) -> dict:
    """Analyse the prior dynamics of the fitted run at `path` and write `analysis.json` and figures there.

    `levels` are raw stimulus values, each a scalar (applied to every input
    channel) or one value per channel; by default the recording's mean
    stimulus. `continuation=(low, high)` follows the equilibria in the
    stimulus level from `low` to `high`, reporting folds and Hopf points.
    Returns the content of `analysis.json`.
    """
    if n_starts < 1:
        raise ConfigError(f"n_starts is {n_starts}; expected an integer >= 1")
    if continuation is not None and continuation[0] == continuation[1]:
        raise ConfigError(f"the continuation range is {list(continuation)}; expected two different stimulus levels")
    run = load_run(path)
    model, recording = run.model, run.recording
    levels = _default_levels(recording) if not levels else levels
    for level in levels:
        encode_constant_input(model, level, recording.n_inputs)

    key_visited, key_levels, key_continuation = jax.random.split(jax.random.PRNGKey(seed), 3)
    visited = visited_states(model, recording, key_visited)
    projection = default_projection(model.latent_size, visited) if model.latent_size >= 2 else None
    run.folder.figures.mkdir(parents=True, exist_ok=True)
    # Figures of an earlier analysis would otherwise sit beside an analysis.json that does not list them.
    for stale in [*run.folder.figures.glob("phase_portrait_*.png"), run.folder.figures / "continuation.png"]:
        stale.unlink(missing_ok=True)

    keys = jax.random.split(key_levels, len(levels))
    result = {
        "latent_size": model.latent_size,
        "drift": type(model.sde.drift).__name__,
        "levels": [_analyse_level(run, i, level, visited, projection, n_starts, keys[i]) for i, level in enumerate(levels)],
    }
    if projection is not None:
        result["projection"] = {"mean": projection.mean.tolist(), "components": projection.components.tolist()}

    if continuation is not None:
        branches = _continuation(run, visited, float(continuation[0]), float(continuation[1]), n_starts, key_continuation)
        result["continuation"] = {"range": [float(v) for v in continuation], "branches": [b.to_dict() for b in branches]}
        if branches:
            figure = run.folder.figures / "continuation.png"
            plot_branches(branches, figure, 0, "stimulus level", "equilibria against the stimulus level")
            result["continuation"]["figure"] = str(figure.relative_to(run.folder.root))

    write_json(run.folder.root / "analysis.json", result)
    return result


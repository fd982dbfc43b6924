"""Analyse a fitted run folder: fixed points and phase portraits per input level, optional continuation.

`analyze_run` is what `neuroude analyze` calls. It writes
`figures/phase_portrait_<i>.png` for each input level,
`figures/continuation.png` when a continuation range is given,
`figures/continuation_constant.png` for a continuation over a mechanistic
constant, `figures/regimes.png` for a two-parameter regime scan, and
`analysis.json` with the numbers behind the figures.
"""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError
from ..runs import write_json
from ..workflow import load_run
from .continuation import Branch, continue_equilibria
from .fitted import encode_constant_input, input_level_family, prior_diffusion, prior_drift, visited_states
from .fixed_points import find_fixed_points, visited_starts
from .noise import simulate
from .parameters import ScalarFamily, axis_label, check_parameter_names, drift_constants, parameter_family
from .phase import default_projection, plot_branches, plot_phase_portrait, plot_regimes
from .regimes import scan_regimes

logger = logging.getLogger("neuroude")

N_SAMPLE_PATHS = 8
MAX_BRANCHES = 4
REGIME_STARTS = 8  # starting states per grid point of a regime scan
REGIME_MAX_STEPS = 20000  # maximum simulation steps per start and grid point


def _default_levels(recording) -> list[np.ndarray]:
    """Return one level, the mean stimulus of the recording (an empty vector when it has none)."""
    if recording.u is None:
        return [np.zeros((0,), np.float32)]
    return [recording.u.reshape(-1, recording.n_inputs).mean(axis=0)]


def format_level(stimulus, scale: float = 1.0) -> str:
    """Format stimulus values for display with 3 significant digits, writing 0 for |x| < 1e-6 * `scale`.

    The mean of a z-scored stimulus comes out as rounding noise such as -1.19e-09, which reads as a real level.
    """
    values = np.atleast_1d(np.asarray(stimulus, np.float64))
    values = np.where(np.abs(values) < 1e-6 * scale, 0.0, values)
    # A recording without a stimulus has no level, which would print as "stimulus ()".
    return ", ".join(f"{value:.3g}" for value in values) or "none"


def _stimulus_scale(recording) -> float:
    """Return the largest absolute stimulus value of the recording, 1 when it has none or all are 0."""
    if recording.u is None or recording.u.size == 0:
        return 1.0
    largest = float(np.nanmax(np.abs(recording.u)))
    return largest if largest > 0 else 1.0


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
    values = format_level(stimulus, _stimulus_scale(recording))
    title = f"stimulus ({values})"
    anchor = _plane_anchor(points) if projection is not None and model.latent_size > 2 else None
    if anchor is not None:
        projection = projection.through(anchor.state)
        title += f"\nplane through the {anchor.stability}; other points projected onto it"
    plot_phase_portrait(prior_drift(model), u, figure, points, paths, projection, title=title)
    logger.info("stimulus (%s): %d fixed or slow points", values, len(points))
    return {
        "stimulus": np.atleast_1d(stimulus).astype(float).tolist(),
        "label": values,
        "drive": np.asarray(u, float).tolist(),
        "points": [point.to_dict() for point in points],
        "figure": str(figure.relative_to(run.folder.root)),
        **({"plane_origin": projection.mean.tolist()} if projection is not None else {}),
    }


def _plane_anchor(points):
    """Return the fixed point the drawn plane passes through: the first stable one, else the first; None if none."""
    fixed = [point for point in points if point.kind == "fixed point"]
    stable = [point for point in fixed if point.is_stable]
    return (stable or fixed or [None])[0]


def _continuation(run, visited, low: float, high: float, n_starts: int, key) -> list[Branch]:
    """Follow the equilibria found at stimulus level `low` (on every input channel) up to `high`."""
    model, recording = run.model, run.recording
    if recording.n_inputs == 0:
        raise ConfigError("the recording has no stimulus, so there is no input level to continue in; drop --continuation")
    direction = np.ones((recording.n_inputs,), np.float32)
    return _continue_family(input_level_family(model, direction), visited, low, high, n_starts, key)


def _continue_family(family, visited, low: float, high: float, n_starts: int, key) -> list[Branch]:
    """Follow each equilibrium of `family(x, p)` found at `p = low` up to `high`, skipping ones already on a branch."""
    starts = visited_starts(visited, n_starts, key, jitter=0.5)
    points = find_fixed_points(family, jnp.asarray(low, jnp.float32), starts)
    points = [point for point in points if point.kind == "fixed point"]

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


def _base_stimulus(level, n_inputs: int) -> np.ndarray:
    """Return the raw stimulus (n_inputs,) of an analysed level, a scalar being applied to every channel."""
    stimulus = np.atleast_1d(np.asarray(level, np.float32))
    return np.full((n_inputs,), float(stimulus[0]), np.float32) if stimulus.size == 1 else stimulus


def _constant_continuation(run, visited, request, base_stimulus, n_starts: int, key) -> dict:
    """Continue the equilibria over one mechanistic constant, the stimulus held at `base_stimulus`."""
    name, low, high = request
    family = ScalarFamily(parameter_family(run.model, [name], base_stimulus))
    branches = _continue_family(family, visited, low, high, n_starts, key)
    result = {
        "constant": name,
        "fitted_value": drift_constants(run.model)[name],
        "range": [low, high],
        "stimulus": base_stimulus.astype(float).tolist(),
        "branches": [branch.to_dict() for branch in branches],
    }
    if branches:
        figure = run.folder.figures / "continuation_constant.png"
        plot_branches(branches, figure, 0, axis_label(name), f"equilibria against {axis_label(name)}")
        result["figure"] = str(figure.relative_to(run.folder.root))
    logger.info("continuation in %s: %d branches", name, len(branches))
    return result


def _regime_scan(run, visited, request, base_stimulus, n_points: int, key) -> dict:
    """Label the regime of the prior drift on an `n_points` x `n_points` grid of two parameters."""
    names = (request[0], request[3])
    family = parameter_family(run.model, names, base_stimulus)
    first = np.linspace(request[1], request[2], n_points)
    second = np.linspace(request[4], request[5], n_points)
    starts = visited_starts(visited, REGIME_STARTS, key, jitter=0.5)
    centre = jnp.asarray([first[n_points // 2], second[n_points // 2]], jnp.float32)
    solver_step = float(run.recording.dt) / run.model.n_substeps
    dt, duration = _regime_timing(family, centre, starts, solver_step)
    logger.info("regime scan over %s and %s: %d points, step %.3g s for %.3g s", *names, n_points**2, dt, duration)
    regimes = scan_regimes(family, first, second, starts, dt, duration)

    figure = run.folder.figures / "regimes.png"
    plot_regimes(regimes, figure, axis_label(names[0]), axis_label(names[1]), "regimes of the prior drift")
    return {
        "parameters": list(names),
        "stimulus": base_stimulus.astype(float).tolist(),
        "integration": {"dt": dt, "duration": duration},
        **regimes.to_dict(),
        "figure": str(figure.relative_to(run.folder.root)),
    }


def _regime_timing(family, parameters, starts, solver_step: float) -> tuple[float, float]:
    """Choose the scan's step and duration from the drift's Jacobian eigenvalues at the starts.

    The step resolves the fastest rate (0.2 / max |lambda|, at most the model's solver step) and the duration
    covers 50 time constants of the slowest nonzero rate, capped at `REGIME_MAX_STEPS` steps.
    """
    jacobians = jax.vmap(jax.jacfwd(lambda x: family(x, parameters)))(starts)
    rates = np.abs(np.linalg.eigvals(np.asarray(jacobians, np.float64))).ravel()
    rates = rates[np.isfinite(rates) & (rates > 1e-9)]
    if rates.size == 0:
        return solver_step, REGIME_MAX_STEPS * solver_step
    dt = min(0.2 / float(rates.max()), solver_step)
    duration = min(50.0 / float(rates.min()), REGIME_MAX_STEPS * dt)
    return dt, max(duration, 3 * dt)


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
    constant_continuation: tuple[str, float, float] | None = None,
    regimes: tuple[str, float, float, str, float, float] | None = None,
    regime_points: int = 10,
) -> dict:
    """Analyse the prior dynamics of the fitted run at `path` and write `analysis.json` and figures there.

    `levels` are raw stimulus values, each a scalar (applied to every input
    channel) or one value per channel; by default the recording's mean
    stimulus. `continuation=(low, high)` follows the equilibria in the
    stimulus level from `low` to `high`, reporting folds and Hopf points.
    `constant_continuation=(name, low, high)` does the same over a mechanistic
    constant of the drift, and `regimes=(name1, low1, high1, name2, low2, high2)`
    labels the regime (equilibrium, oscillation, multistability) on a
    `regime_points` x `regime_points` grid of two parameters, each `input` or a
    constant. Both hold the stimulus at the first of `levels`.
    Returns the content of `analysis.json`.
    """
    _check_requests(n_starts, continuation, constant_continuation, regimes, regime_points)
    run = load_run(path)
    model, recording = run.model, run.recording
    levels = _default_levels(recording) if not levels else levels
    for level in levels:
        encode_constant_input(model, level, recording.n_inputs)
    requested = [request[0] for request in (constant_continuation,) if request] + [
        regimes[index] for index in (0, 3) if regimes
    ]
    check_parameter_names(model, requested)
    base_stimulus = _base_stimulus(levels[0], recording.n_inputs)

    key_visited, key_levels, key_continuation, key_constant, key_regimes = jax.random.split(jax.random.PRNGKey(seed), 5)
    visited = visited_states(model, recording, key_visited)
    projection = default_projection(model.latent_size, visited) if model.latent_size >= 2 else None
    run.folder.figures.mkdir(parents=True, exist_ok=True)
    # Figures of an earlier analysis would otherwise sit beside an analysis.json that does not list them.
    stale = ["continuation.png", "continuation_constant.png", "regimes.png"]
    for figure in [*run.folder.figures.glob("phase_portrait_*.png"), *(run.folder.figures / name for name in stale)]:
        figure.unlink(missing_ok=True)

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
    if constant_continuation is not None:
        result["constant_continuation"] = _constant_continuation(
            run, visited, constant_continuation, base_stimulus, n_starts, key_constant
        )
    if regimes is not None:
        result["regimes"] = _regime_scan(run, visited, regimes, base_stimulus, regime_points, key_regimes)

    write_json(run.folder.root / "analysis.json", result)
    return result


def _check_requests(n_starts: int, continuation, constant_continuation, regimes, regime_points: int) -> None:
    """Raise ConfigError for settings that are wrong whatever the run, before it is loaded."""
    if n_starts < 1:
        raise ConfigError(f"n_starts is {n_starts}; expected an integer >= 1")
    if continuation is not None and continuation[0] == continuation[1]:
        raise ConfigError(f"the continuation range is {list(continuation)}; expected two different stimulus levels")
    if constant_continuation is not None:
        name, low, high = constant_continuation
        if not (np.isfinite(low) and np.isfinite(high)) or low == high:
            raise ConfigError(f"the range of {name!r} is [{low}, {high}]; expected two different finite values")
    if regimes is not None:
        for name, low, high in (regimes[:3], regimes[3:]):
            if not (np.isfinite(low) and np.isfinite(high)) or low == high:
                raise ConfigError(f"the regime range of {name!r} is [{low}, {high}]; expected two different finite values")
        if regimes[0] == regimes[3]:
            raise ConfigError(f"the regime scan names {regimes[0]!r} twice; expected two different parameters")
        if regime_points < 2:
            raise ConfigError(f"regime_points is {regime_points}; expected an integer >= 2 points per axis")

"""Simulated spike recordings from a known latent SDE, for tests and model checks.

Latent system (FitzHugh-Nagumo with a time constant, driven by the input u):

    dv = (v - v^3 / 3 - w + g u(t)) / tau dt + noise dW_1
    dw = eps (v + a - b w) / tau dt + noise dW_2

Observation: y[t, n] ~ Poisson(exp(C[n] . x(t) + b[n])), the expected count per bin.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

from neuroude.data.recording import TRIAL_INFO_KEY, Recording
from neuroude.errors import ConfigError, DataError

DRIFT_PARAMETERS = {"a": 0.7, "b": 0.8, "eps": 0.08, "tau": 0.02, "g": 1.0}
INPUT_OFFSET = 0.5  # mean of u: with g = 1 the system sits in its oscillating range (about 0.35 to 1.4)
INPUT_SMOOTHING_S = 0.05  # standard deviation in seconds of the Gaussian filter that smooths u
SUBSTEPS = 5  # Euler-Maruyama steps per bin
MEAN_COUNT = 0.3  # mean expected count per bin of every neuron
INITIAL_STATE_STD = 0.5


def simulate_latent_sde(
    n_trials: int = 40,
    n_time: int = 100,
    dt: float = 0.01,
    n_neurons: int = 20,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[Recording, dict]:
    """Simulate Poisson spike counts from a 2-D FitzHugh-Nagumo SDE driven by a random input.

    Each trial has its own input u (1 channel): white noise smoothed by a Gaussian filter
    (standard deviation 50 ms), scaled to unit variance and shifted to mean 0.5, held constant
    within each bin. x0 ~ N(0, 0.5^2 I). The SDE is integrated by Euler-Maruyama with 5
    sub-steps per bin. Readout rows C[n] ~ N(0, I), and each bias b[n] is set so that neuron
    n's mean expected count over all trials and bins is 0.3.

    Returns the recording and the ground truth: "x" (trials, time, 2) latent paths at ts,
    "mean_counts" (trials, time, neurons) expected counts along those paths, "x0", "C", "b",
    "parameters" (drift constants, noise, dt, substeps) and "description" (the equations).
    """
    _validate_arguments(n_trials=n_trials, n_time=n_time, dt=dt, n_neurons=n_neurons, noise=noise)
    rng = np.random.default_rng(seed)

    u = _smooth_input(rng, n_trials, n_time, dt)
    x0 = rng.normal(0.0, INITIAL_STATE_STD, size=(n_trials, 2))
    parameters = {**DRIFT_PARAMETERS, "noise": float(noise), "dt": float(dt), "substeps": SUBSTEPS}
    x = _simulate_paths(x0, u, parameters, rng)

    readout = rng.normal(0.0, 1.0, size=(n_neurons, 2))
    log_rates = x @ readout.T
    bias = np.log(MEAN_COUNT) - np.log(np.exp(log_rates).mean(axis=(0, 1)))
    mean_counts = np.exp(log_rates + bias)
    y = rng.poisson(mean_counts)

    source = f"neuroude.data.simulate_latent_sde(seed={seed})"
    recording = _simulated_recording(y, u, dt, source, ["drive"])
    truth = {
        "x": x,
        "mean_counts": mean_counts,
        "x0": x0,
        "C": readout,
        "b": bias,
        "parameters": parameters,
        "description": __doc__,
    }
    return recording, truth


def true_predictive_counts(truth: dict, recording: Recording, n_samples: int = 64, seed: int = 0) -> np.ndarray:
    """Average the true model's open-loop expected counts over fresh noise samples.

    For every trial of `recording`, the true prior SDE is simulated `n_samples` times from
    the true x0 with the recording's input, and exp(C x + b) is averaged over samples. The
    result (trials, time, neurons) is what the data-generating model itself predicts
    without seeing y, the reference for a fitted model's held-out score.

    Trials are matched to the truth by metadata["trial_info"]["trial_id"], so a recording
    made with `Recording.select` works.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ConfigError(f"n_samples is {n_samples!r}; expected a positive integer")
    trial_ids = _trial_ids(truth, recording)

    x0 = np.repeat(truth["x0"][trial_ids], n_samples, axis=0)
    u = np.repeat(recording.u, n_samples, axis=0)
    x = _simulate_paths(x0, u, truth["parameters"], np.random.default_rng(seed))

    mean_counts = np.exp(x @ truth["C"].T + truth["b"])
    return mean_counts.reshape(recording.n_trials, n_samples, recording.n_time, -1).mean(axis=1)


def _trial_ids(truth: dict, recording: Recording) -> np.ndarray:
    n_truth = truth["x0"].shape[0]
    ids = recording.metadata.get(TRIAL_INFO_KEY, {}).get("trial_id")
    if ids is None:
        if recording.n_trials != n_truth:
            raise DataError(
                f"recording has {recording.n_trials} trials and no trial_info['trial_id']; "
                f"expected the {n_truth} trials of the simulation"
            )
        return np.arange(n_truth)

    ids = np.asarray(ids, dtype=np.int64)
    if ids.min() < 0 or ids.max() >= n_truth:
        raise DataError(f"trial_info['trial_id'] ranges from {ids.min()} to {ids.max()}; expected ids in [0, {n_truth})")
    if recording.u is None or recording.u.shape[2] != 1:
        raise DataError("recording has no single-channel input u; expected the recording made by simulate_latent_sde")
    return ids


def _validate_arguments(**arguments: float) -> None:
    for name in ("n_trials", "n_time", "n_neurons"):
        value = arguments[name]
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} is {value!r}; expected a positive integer")
    if not (np.isfinite(arguments["dt"]) and arguments["dt"] > 0):
        raise ConfigError(f"dt is {arguments['dt']!r}; expected a positive number of seconds")
    if not (np.isfinite(arguments["noise"]) and arguments["noise"] >= 0):
        raise ConfigError(f"noise is {arguments['noise']!r}; expected a non-negative number")


def _smooth_input(rng: np.random.Generator, n_trials: int, n_time: int, dt: float) -> np.ndarray:
    white = rng.normal(size=(n_trials, n_time))
    smooth = gaussian_filter1d(white, sigma=INPUT_SMOOTHING_S / dt, axis=1, mode="reflect")
    smooth = (smooth - smooth.mean()) / smooth.std()
    return (smooth + INPUT_OFFSET)[:, :, None]


def _drift(x: np.ndarray, u: np.ndarray, p: dict) -> np.ndarray:
    v, w = x[:, 0], x[:, 1]
    dv = (v - v**3 / 3.0 - w + p["g"] * u) / p["tau"]
    dw = p["eps"] * (v + p["a"] - p["b"] * w) / p["tau"]
    return np.stack([dv, dw], axis=1)


def _simulate_paths(x0: np.ndarray, u: np.ndarray, parameters: dict, rng: np.random.Generator) -> np.ndarray:
    """Integrate the SDE by Euler-Maruyama; return the state at every bin start, (trials, time, 2)."""
    n_time = u.shape[1]
    step = parameters["dt"] / parameters["substeps"]
    noise_scale = parameters["noise"] * np.sqrt(step)

    paths = np.empty((x0.shape[0], n_time, 2))
    x = x0.copy()
    for t in range(n_time):
        paths[:, t] = x
        for _ in range(parameters["substeps"]):
            x = x + _drift(x, u[:, t, 0], parameters) * step + noise_scale * rng.normal(size=x.shape)
    return paths


def simulate_from_drift(
    drift,
    x0: np.ndarray,
    u: np.ndarray,
    dt: float,
    n_substeps: int,
    noise: float,
    readout: np.ndarray,
    bias: np.ndarray | None = None,
    mean_count: float = MEAN_COUNT,
    seed: int = 0,
) -> tuple[Recording, dict]:
    """Simulate Poisson spike counts from any drift `f(t, x, u)`, such as a mechanistic model with known constants.

        dx = f(t, x, u(t)) dt + noise dW
        y[t, n] ~ Poisson(exp(readout[n] . x(t) + bias[n]))

    `drift` is called as `drift(t, x, u)` on one trial's state `x` (d,) and input `u` (m,)
    and returns dx/dt (d,). An equinox Module of `neuroude.dynamics` works as is. `x0` is
    (trials, d), `u` (trials, time, m) and `readout` (neurons, d). The SDE is integrated by
    Euler-Maruyama with `n_substeps` steps per bin of `dt` seconds, with `u` held constant
    within each bin. This is the scheme of a LatentUDE with `solver.method: euler`, the
    same `solver.n_substeps` and `model.interpolation: hold`, so such a model can match the
    simulation exactly. `x[:, 0]` is `x0` and `x[:, k]` the state at time `k * dt`.
    With `bias=None`, each neuron's bias is set so that its mean expected count over all
    trials and bins is `mean_count`.

    Returns the recording and the ground truth: "x" (trials, time, d) latent paths,
    "mean_counts" (trials, time, neurons), "x0", "C", "b" and "parameters" (noise, dt,
    substeps). JAX is imported inside this function, so importing `neuroude.data` still
    does not import it.
    """
    import jax

    x0 = np.asarray(x0, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    readout = np.asarray(readout, dtype=np.float64)
    if x0.ndim != 2:
        raise ConfigError(f"x0 has shape {x0.shape}; expected (trials, latents)")
    if u.ndim != 3 or u.shape[0] != x0.shape[0]:
        raise ConfigError(f"u has shape {u.shape}; expected (trials, time, inputs) with {x0.shape[0]} trials")
    if readout.ndim != 2 or readout.shape[1] != x0.shape[1]:
        raise ConfigError(f"readout has shape {readout.shape}; expected (neurons, {x0.shape[1]})")
    if bias is not None and np.shape(bias) != (readout.shape[0],):
        raise ConfigError(f"bias has shape {np.shape(bias)}; expected ({readout.shape[0]},)")
    if not isinstance(n_substeps, (int, np.integer)) or n_substeps < 1:
        raise ConfigError(f"n_substeps is {n_substeps!r}; expected a positive integer")
    if not mean_count > 0:
        raise ConfigError(f"mean_count is {mean_count!r}; expected a value > 0")
    _validate_arguments(n_trials=x0.shape[0], n_time=u.shape[1], dt=dt, n_neurons=readout.shape[0], noise=noise)

    rng = np.random.default_rng(seed)
    n_trials, n_time = u.shape[:2]
    step = dt / n_substeps
    noise_scale = noise * np.sqrt(step)
    drift_batch = jax.jit(jax.vmap(drift, in_axes=(None, 0, 0)))

    paths = np.empty((n_trials, n_time, x0.shape[1]))
    x = x0.copy()
    for k in range(n_time):
        paths[:, k] = x
        for substep in range(n_substeps):
            t = k * dt + substep * step
            rate = np.asarray(drift_batch(np.float32(t), x.astype(np.float32), u[:, k].astype(np.float32)))
            x = x + rate * step + noise_scale * rng.normal(size=x.shape)
    if not np.all(np.isfinite(paths)):
        raise DataError("the simulated paths diverged to NaN or infinity; reduce dt or raise n_substeps")

    log_rates = paths @ readout.T
    if bias is None:
        bias = np.log(mean_count) - np.log(np.exp(log_rates).mean(axis=(0, 1)))
    bias = np.asarray(bias, dtype=np.float64)
    mean_counts = np.exp(log_rates + bias)
    y = rng.poisson(mean_counts)

    source = f"neuroude.data.synthetic.simulate_from_drift({type(drift).__name__}, seed={seed})"
    recording = _simulated_recording(y, u, dt, source, [f"input {i}" for i in range(u.shape[2])])
    truth = {
        "x": paths,
        "mean_counts": mean_counts,
        "x0": x0,
        "C": readout,
        "b": bias,
        "parameters": {"noise": float(noise), "dt": float(dt), "substeps": int(n_substeps)},
    }
    return recording, truth


def _simulated_recording(y: np.ndarray, u: np.ndarray, dt: float, source: str, input_names: list[str]) -> Recording:
    n_trials, n_time, n_neurons = y.shape
    metadata = {
        "source": source,
        "units": {"y": "spikes per bin", "u": "arbitrary", "ts": "s"},
        "channel_names": [f"neuron {n}" for n in range(n_neurons)],
        "input_names": input_names,
        TRIAL_INFO_KEY: {"trial_id": list(range(n_trials))},
    }
    return Recording(y=y, ts=np.arange(n_time) * dt, u=u, metadata=metadata)

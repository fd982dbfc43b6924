"""Classical spike-count baselines: a constant-rate Poisson model, a Poisson GLM, and
the spike-smoothing and GPFA co-smoothing baselines.

All follow the same pattern: `fit(recording)` on training trials, then
`predict(recording)` returns expected counts per bin, shape (trials, time, channels).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy.linalg import cho_factor, cho_solve
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import minimize, minimize_scalar

from neuroude.data.recording import Recording
from neuroude.errors import ConfigError, DataError, TrainingError
from neuroude.metrics import heldout_channel_split, poisson_log_likelihood

logger = logging.getLogger(__name__)

Basis = Literal["raised_cosine", "delta"]
MAX_LOG_RATE = 30.0  # clip on the linear predictor so exp() cannot overflow during the search


def _require_fitted(model: object, attribute: str) -> None:
    if getattr(model, attribute) is None:
        raise ConfigError(f"{type(model).__name__} is not fitted; call fit(recording) before predict")


def _require_channels(recording: Recording, n_channels: int) -> None:
    if recording.n_channels != n_channels:
        raise DataError(f"recording has {recording.n_channels} channels; expected {n_channels}, as in the fitted recording")


class HomogeneousPoisson:
    """Constant-rate Poisson model: each channel's mean count per bin on the training trials."""

    def __init__(self) -> None:
        self.mean_counts: np.ndarray | None = None  # (channels,) expected count per bin

    def fit(self, recording: Recording) -> HomogeneousPoisson:
        recording.check_counts()
        mask = np.ones(recording.y.shape, bool) if recording.mask is None else recording.mask
        n_observed = mask.sum(axis=(0, 1))
        if np.any(n_observed == 0):
            raise DataError(f"channels {np.flatnonzero(n_observed == 0).tolist()} have no observed entries to fit")

        self.mean_counts = np.where(mask, recording.y, 0.0).sum(axis=(0, 1)) / n_observed
        return self

    def predict(self, recording: Recording) -> np.ndarray:
        _require_fitted(self, "mean_counts")
        _require_channels(recording, self.mean_counts.size)
        return np.broadcast_to(self.mean_counts, recording.y.shape).copy()


def raised_cosine_basis(n_lags: int, n_basis: int, offset: float = 1.0) -> np.ndarray:
    """Return raised-cosine bumps on a log-stretched lag axis, shape (n_lags, n_basis).

    Bump j is 0.5 (1 + cos(clip((log(k + offset) - c_j) pi / (2 s), -pi, pi))) at lag k,
    with centres c_j evenly spaced by s from log(offset) to log(n_lags - 1 + offset). Bumps
    are narrow at short lags and wide at long ones. Each bump spans four spacings, so neighbours overlap and the bumps sum to 2 at lags
    more than two spacings from both end centres.
    """
    if n_basis < 1 or n_basis > n_lags:
        raise ConfigError(f"n_basis is {n_basis}; expected 1 <= n_basis <= n_lags ({n_lags})")
    if n_basis == 1:
        return np.ones((n_lags, 1))

    stretched = np.log(np.arange(n_lags) + offset)
    centres = np.linspace(stretched[0], stretched[-1], n_basis)
    spacing = centres[1] - centres[0]
    phase = np.clip((stretched[:, None] - centres[None, :]) * np.pi / (2.0 * spacing), -np.pi, np.pi)
    return 0.5 * (1.0 + np.cos(phase))


def _lagged(array: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Stack causal shifts of (trials, time, k) into (trials, time, k, len(lags)), zero-padded."""
    n_time = array.shape[1]
    out = np.zeros(array.shape + (lags.size,))
    for i, lag in enumerate(lags):
        if lag < n_time:
            out[:, lag:, :, i] = array[:, : n_time - lag, :]
    return out


def _poisson_objective(
    params: np.ndarray, design: np.ndarray, counts: np.ndarray, ridge: float
) -> tuple[float, np.ndarray]:
    """Return the Poisson negative log-likelihood (without log y!) plus ridge |w|^2, and its gradient.

    params is (w, bias), and the bias is not penalised.
    """
    weights, bias = params[:-1], params[-1]
    eta = np.minimum(design @ weights + bias, MAX_LOG_RATE)
    rate = np.exp(eta)

    value = np.sum(rate - counts * eta) + ridge * weights @ weights
    residual = rate - counts
    gradient = np.append(design.T @ residual + 2.0 * ridge * weights, residual.sum())
    return float(value), gradient


class PoissonGLM:
    """Linear-nonlinear-Poisson model of each channel from stimulus and spike history.

    mean_counts[i, t, n] = exp(sum_k sum_l K[n, k, l] u[i, t - l, k]
                               + sum_{l >= 1} H[n, l] y[i, t - l, n] + bias[n])

    with stimulus lags l = 0 .. n_lags - 1 and history lags l = 1 .. spike_history_lags,
    zero before the trial start. With basis "raised_cosine", K and H are combinations of
    `n_basis` raised-cosine bumps (see `raised_cosine_basis`); with "delta" every lag has
    its own weight. Each channel is fitted separately by minimising the Poisson negative
    log-likelihood plus ridge * |w|^2 (summed over bins, bias unpenalised) with L-BFGS-B.

    With spike history, `predict` uses the observed past counts of the recording it
    predicts, so the prediction is one step ahead, not a free simulation.
    """

    def __init__(
        self,
        n_lags: int = 20,
        ridge: float = 1.0,
        spike_history_lags: int = 0,
        basis: Basis = "raised_cosine",
        n_basis: int = 8,
    ) -> None:
        for name, value in (("n_lags", n_lags), ("spike_history_lags", spike_history_lags)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{name} is {value!r}; expected a non-negative integer")
        if not (np.isfinite(ridge) and ridge >= 0):
            raise ConfigError(f"ridge is {ridge!r}; expected a non-negative number")
        if basis not in ("raised_cosine", "delta"):
            raise ConfigError(f"basis is {basis!r}; expected 'raised_cosine' or 'delta'")
        if not isinstance(n_basis, (int, np.integer)) or n_basis < 1:
            raise ConfigError(f"n_basis is {n_basis!r}; expected a positive integer")

        self.n_lags = int(n_lags)
        self.ridge = float(ridge)
        self.spike_history_lags = int(spike_history_lags)
        self.basis = basis
        self.n_basis = int(n_basis)
        self.stimulus_basis = self._basis(self.n_lags)
        self.history_basis = self._basis(self.spike_history_lags)

        self.weights: np.ndarray | None = None  # (channels, features) in basis coordinates
        self.bias: np.ndarray | None = None  # (channels,)
        self.n_inputs: int | None = None

    def _basis(self, n_lags: int) -> np.ndarray:
        if n_lags == 0 or self.basis == "delta":
            return np.eye(n_lags)
        return raised_cosine_basis(n_lags, min(self.n_basis, n_lags))

    @property
    def stimulus_filters(self) -> np.ndarray:
        """Fitted stimulus kernels K per lag, shape (channels, inputs, n_lags)."""
        _require_fitted(self, "weights")
        n_features = self.n_inputs * self.stimulus_basis.shape[1]
        coefficients = self.weights[:, :n_features].reshape(self.weights.shape[0], self.n_inputs, -1)
        return coefficients @ self.stimulus_basis.T

    @property
    def history_filters(self) -> np.ndarray:
        """Fitted spike-history kernels H for lags 1 .. spike_history_lags, shape (channels, lags)."""
        _require_fitted(self, "weights")
        n_features = self.n_inputs * self.stimulus_basis.shape[1]
        return self.weights[:, n_features:] @ self.history_basis.T

    def _validate_recording(self, recording: Recording) -> None:
        if self.n_lags > 0 and recording.u is None:
            raise DataError(f"recording has no input u, but n_lags is {self.n_lags}; use n_lags=0 for a history-only model")
        recording.check_counts()

    def _stimulus_design(self, recording: Recording) -> np.ndarray:
        """Return stimulus features (trials, time, inputs * n_stimulus_basis)."""
        if self.n_lags == 0:
            return np.zeros((recording.n_trials, recording.n_time, 0))
        lagged = _lagged(recording.u.astype(np.float64), np.arange(self.n_lags))
        features = lagged @ self.stimulus_basis
        return features.reshape(recording.n_trials, recording.n_time, -1)

    def _design(self, recording: Recording, stimulus: np.ndarray, channel: int) -> np.ndarray:
        """Return the design matrix of one channel, (trials * time, features)."""
        parts = [stimulus]
        if self.spike_history_lags > 0:
            # Unobserved past counts enter the history as zeros.
            counts = recording.y if recording.mask is None else np.where(recording.mask, recording.y, 0.0)
            own = counts[:, :, channel : channel + 1].astype(np.float64)
            lagged = _lagged(own, np.arange(1, self.spike_history_lags + 1))[:, :, 0, :]
            parts.append(lagged @ self.history_basis)
        design = np.concatenate(parts, axis=-1)
        return design.reshape(-1, design.shape[-1])

    def fit(self, recording: Recording) -> PoissonGLM:
        """Fit every channel's weights and bias on all trials of `recording`."""
        self._validate_recording(recording)
        self.n_inputs = recording.n_inputs
        stimulus = self._stimulus_design(recording)

        weights, biases = [], []
        for channel in range(recording.n_channels):
            design = self._design(recording, stimulus, channel)
            counts = recording.y[:, :, channel].astype(np.float64).ravel()
            if recording.mask is not None:
                observed = recording.mask[:, :, channel].ravel()
                design, counts = design[observed], counts[observed]
            channel_weights, bias = self._fit_channel(design, counts, channel)
            weights.append(channel_weights)
            biases.append(bias)

        self.weights = np.stack(weights)
        self.bias = np.array(biases)
        return self

    def _fit_channel(self, design: np.ndarray, counts: np.ndarray, channel: int) -> tuple[np.ndarray, float]:
        if counts.size == 0:
            raise DataError(f"channel {channel} has no observed bins to fit")
        start = np.zeros(design.shape[1] + 1)
        start[-1] = np.log(max(counts.mean(), 1e-3))

        result = minimize(
            _poisson_objective,
            start,
            args=(design, counts, self.ridge),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 2000},
        )
        if not np.all(np.isfinite(result.x)):
            raise TrainingError(f"PoissonGLM fit of channel {channel} gave non-finite weights: {result.message}")
        if not result.success:
            logger.warning("PoissonGLM fit of channel %d did not converge: %s", channel, result.message)
        return result.x[:-1], float(result.x[-1])

    def predict(self, recording: Recording) -> np.ndarray:
        """Return expected counts per bin, (trials, time, channels)."""
        _require_fitted(self, "weights")
        self._validate_recording(recording)
        _require_channels(recording, self.weights.shape[0])
        if recording.n_inputs != self.n_inputs:
            raise DataError(f"recording has {recording.n_inputs} inputs; expected {self.n_inputs}, as in the fitted recording")

        stimulus = self._stimulus_design(recording)
        prediction = np.empty(recording.y.shape, dtype=np.float64)
        for channel in range(recording.n_channels):
            design = self._design(recording, stimulus, channel)
            eta = design @ self.weights[channel] + self.bias[channel]
            prediction[:, :, channel] = np.exp(np.minimum(eta, MAX_LOG_RATE)).reshape(recording.n_trials, recording.n_time)
        return prediction


GLM_RIDGES = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)  # starting grid of fit_ridge_by_validation
RIDGE_LIMITS = (1e-6, 1e6)  # the extended grid stops here; 1e-6 is in effect no penalty


def fit_ridge_by_validation(
    train: Recording,
    val: Recording,
    ridges: tuple[float, ...] | None = None,
    **glm_arguments,
) -> tuple[PoissonGLM, dict[float, float]]:
    """Fit a PoissonGLM on `train` for each ridge and keep the best on `val`.

    The score is the validation Poisson log-likelihood summed over all channels, so one
    ridge is chosen for all of them. Without `ridges` the search starts on `GLM_RIDGES`
    and, while the best ridge is at an end of the grid, adds the next decade beyond it,
    up to `RIDGE_LIMITS`. Given `ridges` are searched as they are. Returns the model
    fitted on `train` with the best ridge and the validation log-likelihood (nats) of
    every ridge tried.
    """
    extend = ridges is None
    ridges = GLM_RIDGES if ridges is None else ridges
    if len(ridges) == 0:
        raise ConfigError("ridges is empty; expected at least one ridge value")

    scores, models = {}, {}

    def score(ridge: float) -> None:
        model = PoissonGLM(ridge=ridge, **glm_arguments).fit(train)
        scores[float(ridge)] = poisson_log_likelihood(val.y, model.predict(val), val.mask)
        models[float(ridge)] = model

    for ridge in ridges:
        score(ridge)
    best = max(scores, key=scores.get)
    while extend and _next_ridge(best, scores) is not None:
        score(_next_ridge(best, scores))
        best = max(scores, key=scores.get)

    description = ", ".join(f"{name}={value}" for name, value in glm_arguments.items()) or "default settings"
    logger.info("PoissonGLM (%s): ridge %g chosen on validation; validation log-likelihood (nats) %s",
                description, best, _format_ridge_scores(scores))
    at_edge = len(scores) > 1 and best in (min(scores), max(scores))
    if at_edge and not (extend and best <= RIDGE_LIMITS[0] * (1 + 1e-9)):
        logger.warning(
            "PoissonGLM (%s): the chosen ridge %g is at the edge of the searched ridges %s; "
            "a ridge outside the range might fit the validation trials better",
            description, best, ", ".join(f"{ridge:g}" for ridge in sorted(scores)),
        )
    return models[best], scores


def _format_ridge_scores(scores: dict[float, float]) -> str:
    """Format ridge scores as "SCORE at ridge RIDGE" in increasing ridge order.

    The search adds decades at either end of its grid, so the dictionary's own order is not sorted.
    """
    return ", ".join(f"{scores[ridge]:.6g} at ridge {ridge:g}" for ridge in sorted(scores))


def _next_ridge(best: float, scores: dict[float, float]) -> float | None:
    """Return the ridge a decade beyond `best` when `best` is at an end of the grid and inside `RIDGE_LIMITS`."""
    # Rounding to 6 digits keeps the decades exact (1e-06, not 1.0000000000000002e-06) in logs and metrics.
    if best == min(scores) and best / 10.0 >= RIDGE_LIMITS[0] * (1 - 1e-9):
        return float(f"{best / 10.0:.6g}")
    if best == max(scores) and best * 10.0 <= RIDGE_LIMITS[1] * (1 + 1e-9):
        return float(f"{best * 10.0:.6g}")
    return None


# -- co-smoothing baselines ----------------------------------------------------


def smooth_spikes(y: np.ndarray, kernel_sd: float, bin_width: float) -> np.ndarray:
    """Convolve counts (trials, time, channels) along time with a Gaussian of `kernel_sd` seconds.

    The kernel has unit mass, so the result is a smoothed count per bin. Trial edges
    are reflected, which keeps the mean count near the edges.
    """
    if not (np.isfinite(kernel_sd) and kernel_sd > 0):
        raise ConfigError(f"kernel_sd is {kernel_sd!r}; expected a positive number of seconds")
    return gaussian_filter1d(np.asarray(y, dtype=np.float64), kernel_sd / bin_width, axis=1, mode="reflect")


class PoissonReadout:
    """Poisson GLM from features to counts, one channel at a time, with no time lags.

    mean_counts[i, t, n] = exp(features[i, t] @ W[:, n] + b[n]), fitted by minimising the
    Poisson negative log-likelihood summed over bins plus ridge * |W[:, n]|^2 (L-BFGS-B).
    """

    def __init__(self, ridge: float = 1.0) -> None:
        if not (np.isfinite(ridge) and ridge >= 0):
            raise ConfigError(f"ridge is {ridge!r}; expected a non-negative number")
        self.ridge = float(ridge)
        self.weights: np.ndarray | None = None  # (features, channels)
        self.bias: np.ndarray | None = None  # (channels,)

    def fit(self, features: np.ndarray, counts: np.ndarray) -> PoissonReadout:
        design = features.reshape(-1, features.shape[-1])
        counts = counts.reshape(-1, counts.shape[-1]).astype(np.float64)
        weights, biases = [], []
        for channel in range(counts.shape[1]):
            start = np.zeros(design.shape[1] + 1)
            start[-1] = np.log(max(counts[:, channel].mean(), 1e-3))
            result = minimize(
                _poisson_objective, start, args=(design, counts[:, channel], self.ridge),
                jac=True, method="L-BFGS-B", options={"maxiter": 1000},
            )
            if not np.all(np.isfinite(result.x)):
                raise TrainingError(f"Poisson readout of channel {channel} gave non-finite weights: {result.message}")
            weights.append(result.x[:-1])
            biases.append(result.x[-1])
        self.weights = np.stack(weights, axis=1)
        self.bias = np.array(biases)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        _require_fitted(self, "weights")
        return np.exp(np.minimum(features @ self.weights + self.bias, MAX_LOG_RATE))


def _heldout_split(recording: Recording, heldout) -> tuple[np.ndarray, np.ndarray]:
    heldin, heldout = heldout_channel_split(heldout, recording.n_channels)
    return np.asarray(heldin), np.asarray(heldout)


class SpikeSmoothing:
    """Spike-smoothing co-smoothing baseline of the Neural Latents Benchmark.

    Held-in counts are smoothed with a Gaussian kernel (`smooth_spikes`). A Poisson GLM
    (`PoissonReadout`) from log(smoothed held-in counts + log_offset) to the held-out
    counts is fitted on the training trials. `predict` returns the smoothed counts for
    held-in channels and the GLM's expected counts for held-out ones.
    """

    def __init__(self, heldout, kernel_sd: float = 0.1, ridge: float = 1.0, log_offset: float = 1e-4) -> None:
        self.heldout_neurons = heldout
        self.kernel_sd = float(kernel_sd)
        self.log_offset = float(log_offset)
        self.readout = PoissonReadout(ridge)
        self.n_channels: int | None = None

    def features(self, recording: Recording) -> np.ndarray:
        """Return the smoothed held-in counts of every trial, (trials, time, held-in channels)."""
        heldin, _ = _heldout_split(recording, self.heldout_neurons)
        return smooth_spikes(recording.y[:, :, heldin], self.kernel_sd, recording.dt)

    def fit(self, recording: Recording) -> SpikeSmoothing:
        recording.check_counts()
        _, heldout = _heldout_split(recording, self.heldout_neurons)
        self.readout.fit(np.log(self.features(recording) + self.log_offset), recording.y[:, :, heldout])
        self.n_channels = recording.n_channels
        return self

    def predict(self, recording: Recording) -> np.ndarray:
        _require_fitted(self, "n_channels")
        _require_channels(recording, self.n_channels)
        heldin, heldout = _heldout_split(recording, self.heldout_neurons)
        smoothed = self.features(recording)

        prediction = np.empty(recording.y.shape, dtype=np.float64)
        prediction[:, :, heldin] = smoothed
        prediction[:, :, heldout] = self.readout.predict(np.log(smoothed + self.log_offset))
        return prediction


class GPFA:
    """Gaussian-process factor analysis (GPFA) fitted by expectation maximisation.

    Generative model of one trial with latents x (time, latents) and observations
    y (time, channels):

        x_j(.) ~ GP(0, k_j),  k_j(t, s) = (1 - noise) exp(-(t - s)^2 / (2 tau_j^2)) + noise [t = s]
        y(t) = C x(t) + d + e(t),  e(t) ~ N(0, diag(R))

    The E-step computes the exact Gaussian posterior of all latents of a trial, which
    costs one (latents * time)^2 matrix inverse shared by all trials of equal length.
    The M-step updates C, d and R in closed form and each timescale tau_j by a bounded
    1-D search on the expected log prior. `noise` is fixed, as in the usual GPFA fit.
    """

    def __init__(
        self, latent_size: int, n_iterations: int = 50, initial_timescale: float = 0.1, noise: float = 1e-3,
    ) -> None:
        if not isinstance(latent_size, (int, np.integer)) or latent_size < 1:
            raise ConfigError(f"latent_size is {latent_size!r}; expected a positive integer")
        if not isinstance(n_iterations, (int, np.integer)) or n_iterations < 1:
            raise ConfigError(f"n_iterations is {n_iterations!r}; expected a positive integer")
        if not (np.isfinite(initial_timescale) and initial_timescale > 0):
            raise ConfigError(f"initial_timescale is {initial_timescale!r}; expected a positive number of seconds")
        if not 0 < noise < 1:
            raise ConfigError(f"noise is {noise!r}; expected a number in (0, 1)")
        self.latent_size = int(latent_size)
        self.n_iterations = int(n_iterations)
        self.initial_timescale = float(initial_timescale)
        self.noise = float(noise)

        self.loading: np.ndarray | None = None  # C, (channels, latents)
        self.offset: np.ndarray | None = None  # d, (channels,)
        self.variance: np.ndarray | None = None  # R, (channels,)
        self.timescales: np.ndarray | None = None  # tau, (latents,) in seconds
        self.log_likelihoods: list[float] = []  # marginal log-likelihood before each M-step

    def _kernel(self, timescale: float, times: np.ndarray) -> np.ndarray:
        lags = times[:, None] - times[None, :]
        return (1.0 - self.noise) * np.exp(-0.5 * (lags / timescale) ** 2) + self.noise * np.eye(times.size)

    def _posterior(self, y: np.ndarray, times: np.ndarray, loading, offset, variance, timescales):
        """Return posterior means (trials, latents, time), covariance (latents*time, latents*time) and log p(y).

        Latents are stacked latent-major, so the prior covariance is block diagonal and
        the posterior precision is blockdiag(K_j^-1) + (C' R^-1 C) kron I_time.
        """
        n_trials, n_time, n_channels = y.shape
        p = loading.shape[1]
        precision = np.kron(loading.T @ (loading / variance[:, None]), np.eye(n_time))
        log_det_prior = 0.0
        for j in range(p):
            factor = cho_factor(self._kernel(timescales[j], times), lower=True)
            block = slice(j * n_time, (j + 1) * n_time)
            precision[block, block] += cho_solve(factor, np.eye(n_time))
            log_det_prior += 2.0 * np.log(np.diag(factor[0])).sum()

        factor = cho_factor(precision, lower=True)
        covariance = cho_solve(factor, np.eye(p * n_time))
        residual = y - offset
        projected = (residual / variance) @ loading  # (trials, time, latents)
        stacked = projected.transpose(0, 2, 1).reshape(n_trials, -1)  # latent-major
        means = stacked @ covariance  # covariance is symmetric

        quadratic = np.sum(residual**2 / variance) - np.sum(means * stacked)
        log_det = log_det_prior + 2.0 * np.log(np.diag(factor[0])).sum() + n_time * np.log(variance).sum()
        log_likelihood = -0.5 * (quadratic + n_trials * (log_det + n_time * n_channels * np.log(2 * np.pi)))
        return means.reshape(n_trials, p, n_time), covariance, float(log_likelihood)

    def _initialise(self, y: np.ndarray) -> None:
        flat = y.reshape(-1, y.shape[-1])
        self.offset = flat.mean(axis=0)
        covariance = np.cov(flat, rowvar=False)
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        top = np.argsort(eigenvalues)[::-1][: self.latent_size]
        self.loading = eigenvectors[:, top] * np.sqrt(np.maximum(eigenvalues[top], 1e-6))
        self.variance = np.maximum(np.diag(covariance) - np.sum(self.loading**2, axis=1), 1e-3 * np.diag(covariance) + 1e-9)
        self.timescales = np.full(self.latent_size, self.initial_timescale)

    def _update_timescale(self, second_moment: np.ndarray, n_trials: int, times: np.ndarray, bounds) -> float:
        """Maximise E[log N(x_j; 0, K_j)] over tau_j, given sum_n E[x_j x_j'] = `second_moment`."""

        def negative_expected_log_prior(log_timescale):
            factor = cho_factor(self._kernel(np.exp(log_timescale), times), lower=True)
            trace = np.trace(cho_solve(factor, second_moment))
            return 0.5 * trace + n_trials * np.log(np.diag(factor[0])).sum()

        # A tolerance of 1e-3 in log(tau) is a 0.1 % change of the timescale, far below its EM uncertainty.
        result = minimize_scalar(
            negative_expected_log_prior, bounds=np.log(bounds), method="bounded", options={"xatol": 1e-3}
        )
        return float(np.exp(result.x))

    def fit(self, y: np.ndarray, bin_width: float) -> GPFA:
        """Fit C, d, R and the timescales to `y` (trials, time, channels) of equal-length trials."""
        # NOTE: EM runs a fixed number of iterations with no convergence test. With several latents
        # it separates their timescales slowly (100 iterations in a two-latent test), while C converges fast.
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 3 or not np.all(np.isfinite(y)):
            raise DataError(f"y has shape {y.shape}; expected finite values of shape (trials, time, channels)")
        if y.shape[-1] < self.latent_size:
            raise ConfigError(f"latent_size is {self.latent_size}; expected at most the {y.shape[-1]} channels of y")
        n_trials, n_time, _ = y.shape
        times = np.arange(n_time) * bin_width
        bounds = (0.5 * bin_width, 2.0 * n_time * bin_width)
        self._initialise(y)
        self.log_likelihoods = []

        for _ in range(self.n_iterations):
            means, covariance, log_likelihood = self._posterior(
                y, times, self.loading, self.offset, self.variance, self.timescales
            )
            self.log_likelihoods.append(log_likelihood)
            self._maximise(y, means, covariance, times, bounds)
        return self

    def _maximise(self, y, means, covariance, times, bounds) -> None:
        n_trials, n_time, n_channels = y.shape
        p = self.latent_size
        blocks = covariance.reshape(p, n_time, p, n_time)

        # Sufficient statistics of the augmented latent [x; 1], summed over trials and bins.
        latents = means.transpose(0, 2, 1).reshape(-1, p)  # (trials * time, latents)
        flat_y = y.reshape(-1, n_channels)
        same_time = np.einsum("itjt->ij", blocks)  # sum_t Cov[x(t), x(t)]
        augmented = np.concatenate([latents, np.ones((latents.shape[0], 1))], axis=1)
        moment = augmented.T @ augmented
        moment[:p, :p] += n_trials * same_time
        cross = flat_y.T @ augmented  # (channels, latents + 1)

        loading_offset = np.linalg.solve(moment, cross.T).T
        self.loading, self.offset = loading_offset[:, :p], loading_offset[:, p]
        residual_variance = (np.sum(flat_y**2, axis=0) - np.sum(loading_offset * cross, axis=1)) / flat_y.shape[0]
        self.variance = np.maximum(residual_variance, 1e-6 * flat_y.var(axis=0) + 1e-9)

        for j in range(p):
            second_moment = n_trials * blocks[j, :, j, :] + means[:, j, :].T @ means[:, j, :]
            self.timescales[j] = self._update_timescale(second_moment, n_trials, times, bounds)

    def latents(self, y: np.ndarray, bin_width: float, channels=None) -> np.ndarray:
        """Return posterior mean latents (trials, time, latents) given `y`.

        With `channels`, `y` holds only those channels of the fitted ones, and the
        posterior is computed from them alone.
        """
        _require_fitted(self, "loading")
        y = np.asarray(y, dtype=np.float64)
        channels = np.arange(self.loading.shape[0]) if channels is None else np.asarray(channels)
        if y.ndim != 3 or y.shape[-1] != channels.size:
            raise DataError(f"y has shape {y.shape}; expected (trials, time, {channels.size}) for the chosen channels")
        times = np.arange(y.shape[1]) * bin_width
        means, _, _ = self._posterior(
            y, times, self.loading[channels], self.offset[channels], self.variance[channels], self.timescales
        )
        return means.transpose(0, 2, 1)


class GPFACoSmoothing:
    """GPFA co-smoothing baseline, as in the Neural Latents Benchmark.

    GPFA (`GPFA`) is fitted to the square roots of the held-in counts of the training
    trials. A Poisson GLM (`PoissonReadout`) maps the posterior mean latents, inferred
    from held-in neurons only, to the held-out counts. `predict` returns the GPFA
    reconstruction (squared, floored at 0) for held-in channels and the GLM's expected
    counts for held-out ones.
    """

    def __init__(self, heldout, latent_size: int = 8, ridge: float = 1.0, n_iterations: int = 50) -> None:
        self.heldout_neurons = heldout
        self.gpfa = GPFA(latent_size, n_iterations)
        self.readout = PoissonReadout(ridge)
        self.n_channels: int | None = None

    def latents(self, recording: Recording) -> np.ndarray:
        """Return GPFA posterior mean latents from the held-in neurons, (trials, time, latents)."""
        heldin, _ = _heldout_split(recording, self.heldout_neurons)
        return self.gpfa.latents(np.sqrt(recording.y[:, :, heldin]), recording.dt)

    def fit(self, recording: Recording) -> GPFACoSmoothing:
        recording.check_counts()
        heldin, heldout = _heldout_split(recording, self.heldout_neurons)
        self.gpfa.fit(np.sqrt(recording.y[:, :, heldin]), recording.dt)
        self.readout.fit(self.latents(recording), recording.y[:, :, heldout])
        self.n_channels = recording.n_channels
        return self

    def predict(self, recording: Recording) -> np.ndarray:
        _require_fitted(self, "n_channels")
        _require_channels(recording, self.n_channels)
        heldin, heldout = _heldout_split(recording, self.heldout_neurons)
        latents = self.latents(recording)

        prediction = np.empty(recording.y.shape, dtype=np.float64)
        reconstruction = latents @ self.gpfa.loading.T + self.gpfa.offset
        prediction[:, :, heldin] = np.maximum(reconstruction, 0.0) ** 2
        prediction[:, :, heldout] = self.readout.predict(latents)
        return prediction


# -- reduced-rank regression ---------------------------------------------------


RRR_RIDGES = (0.0, 0.01, 0.1, 1.0)  # relative ridge penalties searched by cross-validation


class ReducedRankRegression:
    """Linear prediction of targets y (q channels) from sources x (p channels) through a rank-r map.

    With centred training data X (n, p) and Y (n, q) and lambda = ridge * trace(X'X) / p
    (so `ridge` is relative to the mean variance of the sources):

        B_ridge = (X'X + lambda I)^-1 X'Y
        Y_hat = X B_ridge = U S V'            (thin SVD of the fitted values)
        B_r = B_ridge V_r V_r'                (V_r: the first r right singular vectors)

    and the prediction is (x - mean_x) B_r + mean_y. With ridge 0 this is the classical
    reduced-rank regression estimate, the least-squares solution among maps of rank r.

    With masks (True where observed), the fit uses only the samples whose sources and
    targets are all observed (complete cases), so the values stored behind a False do not
    enter it. The prediction fills an unobserved source with its training mean, which
    after centring is a zero that adds nothing to the prediction.
    """

    def __init__(self, rank: int, ridge: float = 0.0) -> None:
        if not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ConfigError(f"rank is {rank!r}; expected a positive integer")
        if not (np.isfinite(ridge) and ridge >= 0):
            raise ConfigError(f"ridge is {ridge!r}; expected a non-negative number")
        self.rank = int(rank)
        self.ridge = float(ridge)
        self.coefficients: np.ndarray | None = None  # B_r, (p, q)
        self.source_mean: np.ndarray | None = None  # (p,)
        self.target_mean: np.ndarray | None = None  # (q,)

    def fit(self, x: np.ndarray, y: np.ndarray, x_mask=None, y_mask=None) -> ReducedRankRegression:
        """Fit on x (..., p) and y (..., q), whose leading axes all index samples.

        `x_mask` and `y_mask`, bool arrays of the shapes of x and y, drop every sample
        with an unobserved (False) entry from the fit.
        """
        x, y = _regression_pair(x, y, x_mask, y_mask)
        if self.rank > min(x.shape[1], y.shape[1]):
            raise ConfigError(
                f"rank is {self.rank}; expected at most min(sources, targets) = {min(x.shape[1], y.shape[1])}"
            )
        self.source_mean, self.target_mean = x.mean(axis=0), y.mean(axis=0)
        full, directions = _ridge_and_directions(x - self.source_mean, y - self.target_mean, self.ridge)
        leading = directions[:, : self.rank]
        self.coefficients = full @ leading @ leading.T
        return self

    def predict(self, x: np.ndarray, x_mask=None) -> np.ndarray:
        """Return predicted targets (..., q) for sources x (..., p); unobserved sources count as their mean."""
        _require_fitted(self, "coefficients")
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.source_mean.size:
            raise DataError(f"x has {x.shape[-1]} channels; expected {self.source_mean.size}, as in the fitted x")
        if x_mask is not None:
            x = np.where(_check_mask("x_mask", x_mask, x.shape), x, self.source_mean)
        return (x - self.source_mean) @ self.coefficients + self.target_mean


def _regression_pair(x, y, x_mask=None, y_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten (..., p) and (..., q) arrays to (samples, p) and (samples, q), keeping the complete samples."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim < 2 or x.shape[:-1] != y.shape[:-1]:
        raise DataError(f"x has shape {x.shape} and y {y.shape}; expected the same sample axes before the channels")
    complete = np.ones(x.shape[:-1], bool)
    if x_mask is not None:
        complete &= _check_mask("x_mask", x_mask, x.shape).all(axis=-1)
    if y_mask is not None:
        complete &= _check_mask("y_mask", y_mask, y.shape).all(axis=-1)
    x, y = x[complete], y[complete]
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise DataError("x or y contains NaN or infinite values; expected finite values")
    if x.shape[0] < 2:
        where = "" if x_mask is None and y_mask is None else " with every source and target observed"
        raise DataError(f"x has {x.shape[0]} samples{where}; expected at least 2")
    return x, y


def _check_mask(name: str, mask, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != np.bool_ or mask.shape != shape:
        raise DataError(f"{name} has shape {mask.shape} and dtype {mask.dtype}; expected bool of shape {shape}")
    return mask


def _ridge_and_directions(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Return B_ridge (p, q) and the right singular vectors of X B_ridge as columns (q, q), largest first."""
    gram = x.T @ x
    penalty = ridge * np.trace(gram) / gram.shape[0]
    # lstsq keeps the unpenalised fit defined when X'X is singular (more sources than samples).
    full = np.linalg.lstsq(gram + penalty * np.eye(gram.shape[0]), x.T @ y, rcond=None)[0]
    _, _, right = np.linalg.svd(x @ full, full_matrices=False)
    directions = right.T
    if directions.shape[1] < y.shape[1]:  # fewer samples than targets: complete the basis
        directions = np.linalg.qr(np.concatenate([directions, np.eye(y.shape[1])], axis=1))[0][:, : y.shape[1]]
    return full, directions


def _mean_r_squared(y: np.ndarray, prediction: np.ndarray) -> float:
    """1 - SSE / SST per channel (SST around the channel's mean in `y`), averaged over channels."""
    sst = np.sum((y - y.mean(axis=0)) ** 2, axis=0)
    sse = np.sum((y - prediction) ** 2, axis=0)
    return float(np.mean(1.0 - sse / np.maximum(sst, np.finfo(float).tiny)))


def _rows_of(x_mask, y_mask, trials) -> tuple[np.ndarray | None, np.ndarray | None]:
    return tuple(None if mask is None else np.asarray(mask)[trials] for mask in (x_mask, y_mask))


def fit_reduced_rank_by_cross_validation(
    x: np.ndarray,
    y: np.ndarray,
    ranks: tuple[int, ...] | None = None,
    ridges: tuple[float, ...] = RRR_RIDGES,
    n_folds: int = 5,
    seed: int = 0,
    x_mask: np.ndarray | None = None,
    y_mask: np.ndarray | None = None,
) -> tuple[ReducedRankRegression, dict]:
    """Choose the ridge and rank of a ReducedRankRegression by cross-validation over trials.

    x is (trials, time, p) and y (trials, time, q). The trials are split into `n_folds`
    folds at random. Each setting is fitted on all folds but one and scored by the mean
    R^2 over the target channels on the left-out fold. The ridge with the best mean score
    over folds (at its best rank) is kept. The rank is then the smallest one whose mean
    score is within one standard error (over folds) of that best score, which prefers a
    small map when larger ones predict no better. The model is refitted on all trials.
    With `x_mask` and `y_mask` (bool, True where observed), fits and scores use only the
    bins whose sources and targets are all observed.

    Returns the fitted model and a dictionary with the chosen `rank` and `ridge`, and the
    cross-validated score of every rank at the chosen ridge.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 3 or y.ndim != 3 or x.shape[:2] != y.shape[:2]:
        raise DataError(f"x has shape {x.shape} and y {y.shape}; expected (trials, time, p) and (trials, time, q)")
    if not 2 <= n_folds <= x.shape[0]:
        raise ConfigError(f"n_folds is {n_folds}; expected between 2 and the {x.shape[0]} trials")
    if len(ridges) == 0:
        raise ConfigError("ridges is empty; expected at least one ridge value")
    max_rank = min(x.shape[-1], y.shape[-1])
    ranks = tuple(range(1, max_rank + 1)) if ranks is None else tuple(int(rank) for rank in ranks)
    if not ranks or min(ranks) < 1 or max(ranks) > max_rank:
        raise ConfigError(f"ranks is {list(ranks)}; expected ranks between 1 and min(sources, targets) = {max_rank}")

    folds = np.array_split(np.random.default_rng(seed).permutation(x.shape[0]), n_folds)
    scores = np.empty((len(ridges), len(ranks), n_folds))
    for k, fold in enumerate(folds):
        kept = np.setdiff1d(np.arange(x.shape[0]), fold)
        train_x, train_y = _regression_pair(x[kept], y[kept], *_rows_of(x_mask, y_mask, kept))
        test_x, test_y = _regression_pair(x[fold], y[fold], *_rows_of(x_mask, y_mask, fold))
        source_mean, target_mean = train_x.mean(axis=0), train_y.mean(axis=0)
        for i, ridge in enumerate(ridges):
            full, directions = _ridge_and_directions(train_x - source_mean, train_y - target_mean, ridge)
            projected = (test_x - source_mean) @ full  # rank-r prediction is this times V_r V_r'
            for j, rank in enumerate(ranks):
                kept_directions = directions[:, :rank]
                prediction = projected @ kept_directions @ kept_directions.T + target_mean
                scores[i, j, k] = _mean_r_squared(test_y, prediction)

    mean, error = scores.mean(axis=2), scores.std(axis=2, ddof=1) / np.sqrt(n_folds)
    best_ridge = int(np.argmax(mean.max(axis=1)))
    best_rank = int(np.argmax(mean[best_ridge]))
    threshold = mean[best_ridge, best_rank] - error[best_ridge, best_rank]
    chosen = int(np.flatnonzero(mean[best_ridge] >= threshold)[0])

    model = ReducedRankRegression(ranks[chosen], ridges[best_ridge]).fit(x, y, x_mask, y_mask)
    settings = {
        "rank": ranks[chosen],
        "ridge": float(ridges[best_ridge]),
        "best_rank": ranks[best_rank],
        "cross_validated_r_squared": {int(rank): float(score) for rank, score in zip(ranks, mean[best_ridge])},
    }
    logger.info("reduced-rank regression: rank %d, ridge %g chosen by %d-fold cross-validation",
                settings["rank"], settings["ridge"], n_folds)
    return model, settings

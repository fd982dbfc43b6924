"""Classical spike-count baselines: a constant-rate Poisson model and a Poisson GLM.

Both follow the same pattern: `fit(recording)` on training trials, then
`predict(recording)` returns expected counts per bin, shape (trials, time, channels).
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from scipy.optimize import minimize

from neuroude.data.recording import Recording
from neuroude.errors import ConfigError, DataError, TrainingError
from neuroude.metrics import poisson_log_likelihood

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


def fit_ridge_by_validation(
    train: Recording,
    val: Recording,
    ridges: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0),
    **glm_arguments,
) -> tuple[PoissonGLM, dict[float, float]]:
    """Fit a PoissonGLM on `train` for each ridge and keep the best on `val`.

    The score is the validation Poisson log-likelihood summed over all channels, so one
    ridge is chosen for all of them. Returns the model fitted on `train` with the best
    ridge and the validation log-likelihood (nats) of every ridge.
    """
    if len(ridges) == 0:
        raise ConfigError("ridges is empty; expected at least one ridge value")

    scores, models = {}, {}
    for ridge in ridges:
        model = PoissonGLM(ridge=ridge, **glm_arguments).fit(train)
        scores[float(ridge)] = poisson_log_likelihood(val.y, model.predict(val), val.mask)
        models[float(ridge)] = model

    best = max(scores, key=scores.get)
    description = ", ".join(f"{name}={value}" for name, value in glm_arguments.items()) or "default settings"
    logger.info("PoissonGLM (%s): ridge %g chosen on validation; log-likelihoods %s", description, best, scores)
    if len(ridges) > 1 and best in (min(ridges), max(ridges)):
        logger.warning(
            "PoissonGLM (%s): the chosen ridge %g is at the edge of the searched range %s; "
            "a ridge outside the range might fit the validation trials better",
            description, best, sorted(float(ridge) for ridge in ridges),
        )
    return models[best], scores

import logging

import numpy as np
import pytest

from neuroude.baselines import (
    GLM_RIDGES,
    RIDGE_LIMITS,
    HomogeneousPoisson,
    PoissonGLM,
    fit_ridge_by_validation,
    raised_cosine_basis,
)
from neuroude.data import Recording, load_grasshopper
from neuroude.errors import ConfigError, DataError
from neuroude.metrics import bits_per_spike, score_window

TRUE_KERNEL = np.array([0.8, 0.5, -0.3, -0.2, 0.1])
TRUE_HISTORY = np.array([-1.5, -0.5])
TRUE_BIAS = np.log(0.3)


def simulate_glm(n_trials=60, n_time=200, history=None, seed=0):
    """Simulate one neuron with mean count exp(kernel * u + history * past y + bias)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n_trials, n_time))
    drive = TRUE_BIAS + sum(TRUE_KERNEL[lag] * np.pad(u, ((0, 0), (lag, 0)))[:, :n_time] for lag in range(5))

    y = np.zeros((n_trials, n_time))
    for t in range(n_time):
        eta = drive[:, t].copy()
        if history is not None:
            for lag, weight in enumerate(history, start=1):
                if t - lag >= 0:
                    eta += weight * y[:, t - lag]
        y[:, t] = rng.poisson(np.exp(eta))
    return Recording(y=y[:, :, None], ts=np.arange(n_time) * 0.01, u=u[:, :, None])


def test_homogeneous_poisson_fits_channel_means():
    y = np.zeros((2, 4, 2))
    y[0, :, 0] = 1.0
    y[:, :, 1] = 3.0
    recording = Recording(y=y, ts=np.arange(4) * 0.1)
    prediction = HomogeneousPoisson().fit(recording).predict(recording)
    assert prediction.shape == (2, 4, 2)
    assert np.allclose(prediction[1, 2], [0.5, 3.0])


def test_homogeneous_poisson_respects_mask():
    y = np.array([[[1.0], [5.0]]])
    mask = np.array([[[True], [False]]])
    model = HomogeneousPoisson().fit(Recording(y=y, ts=[0.0, 0.1], mask=mask))
    assert np.allclose(model.mean_counts, [1.0])


def test_predict_before_fit():
    recording = Recording(y=np.zeros((1, 2, 1)), ts=[0.0, 0.1], u=np.zeros((1, 2, 1)))
    with pytest.raises(ConfigError, match="not fitted"):
        PoissonGLM().predict(recording)


def test_raised_cosine_basis_shape_and_coverage():
    basis = raised_cosine_basis(20, 6)
    assert basis.shape == (20, 6)
    assert basis[0, 0] == pytest.approx(1.0)
    assert basis[-1, -1] == pytest.approx(1.0)
    assert np.linalg.matrix_rank(basis) == 6
    assert np.all(np.diff(basis.argmax(axis=0)) > 0)


def test_raised_cosine_basis_interior_sum():
    n_lags = 200
    basis = raised_cosine_basis(n_lags, 6)
    stretched = np.log(np.arange(n_lags) + 1.0)
    spacing = stretched[-1] / 5
    interior = (stretched > 2 * spacing) & (stretched < stretched[-1] - 2 * spacing)
    assert np.allclose(basis[interior].sum(axis=1), 2.0)


def test_glm_recovers_delta_kernel():
    recording = simulate_glm()
    model = PoissonGLM(n_lags=5, ridge=1e-3, basis="delta").fit(recording)
    assert np.allclose(model.stimulus_filters[0, 0], TRUE_KERNEL, atol=0.06)
    assert model.bias[0] == pytest.approx(TRUE_BIAS, abs=0.06)


def test_glm_recovers_kernel_and_history():
    recording = simulate_glm(history=TRUE_HISTORY)
    model = PoissonGLM(n_lags=5, ridge=1e-3, spike_history_lags=2, basis="delta").fit(recording)
    assert np.allclose(model.stimulus_filters[0, 0], TRUE_KERNEL, atol=0.08)
    assert np.allclose(model.history_filters[0], TRUE_HISTORY, atol=0.15)


def test_glm_recovers_kernel_in_basis_span():
    basis = raised_cosine_basis(5, 3)
    kernel = basis @ np.array([0.9, -0.4, 0.2])
    rng = np.random.default_rng(1)
    u = rng.normal(size=(60, 200))
    drive = TRUE_BIAS + sum(kernel[lag] * np.pad(u, ((0, 0), (lag, 0)))[:, :200] for lag in range(5))
    recording = Recording(y=rng.poisson(np.exp(drive))[:, :, None], ts=np.arange(200) * 0.01, u=u[:, :, None])

    model = PoissonGLM(n_lags=5, ridge=1e-3, n_basis=3).fit(recording)

    assert np.allclose(model.stimulus_filters[0, 0], kernel, atol=0.06)


def test_glm_predict_is_causal():
    recording = simulate_glm(n_trials=10)
    model = PoissonGLM(n_lags=5, ridge=1.0, basis="delta").fit(recording)
    u = recording.u.copy()
    u[:, 100:] += 5.0
    changed = Recording(y=recording.y, ts=recording.ts, u=u)
    assert np.array_equal(model.predict(changed)[:, :100], model.predict(recording)[:, :100])


def test_glm_without_input():
    recording = Recording(y=np.ones((2, 5, 1)), ts=np.arange(5) * 0.1)
    with pytest.raises(DataError, match="no input u, but n_lags is 20"):
        PoissonGLM().fit(recording)


def test_glm_history_only_without_input():
    recording = simulate_glm(n_trials=20)
    history_only = Recording(y=recording.y, ts=recording.ts)
    prediction = PoissonGLM(n_lags=0, spike_history_lags=3).fit(history_only).predict(history_only)
    assert prediction.shape == recording.y.shape


def test_glm_rejects_non_counts():
    recording = Recording(y=np.full((2, 5, 1), 0.5), ts=np.arange(5) * 0.1, u=np.zeros((2, 5, 1)))
    with pytest.raises(DataError, match="non-integer"):
        PoissonGLM(n_lags=2).fit(recording)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"n_lags": -1}, "n_lags"),
        ({"ridge": -1.0}, "ridge"),
        ({"basis": "spline"}, "basis"),
        ({"n_basis": 0}, "n_basis"),
    ],
)
def test_glm_rejects_bad_arguments(arguments, message):
    with pytest.raises(ConfigError, match=message):
        PoissonGLM(**arguments)


def test_ridge_selection_returns_best_validation_score(caplog):
    recording = simulate_glm(n_trials=30)
    train, val = recording.select(np.arange(20)), recording.select(np.arange(20, 30))
    with caplog.at_level(logging.INFO, logger="neuroude"):
        model, scores = fit_ridge_by_validation(train, val, ridges=(1e4, 1e-2), n_lags=5, basis="delta")
    assert set(scores) == {1e-2, 1e4}
    assert model.ridge == 1e-2
    assert scores[1e-2] > scores[1e4]
    # The log lists the ridges in increasing order, whatever order they were searched in.
    listed = f"(nats) {scores[1e-2]:.6g} at ridge 0.01, {scores[1e4]:.6g} at ridge 10000"
    assert any(listed in record.getMessage() for record in caplog.records), caplog.text


def test_ridge_selection_extends_grid_at_edge(caplog):
    recording = simulate_glm(n_trials=30)
    train, val = recording.select(np.arange(20)), recording.select(np.arange(20, 30))
    with caplog.at_level(logging.INFO, logger="neuroude"):
        model, scores = fit_ridge_by_validation(train, val, n_lags=5, basis="delta")
    best = max(scores, key=scores.get)
    assert model.ridge == best
    assert set(GLM_RIDGES) <= set(scores)
    # The search adds decades beyond the starting grid until the best ridge is inside it or at the limit.
    assert best > min(scores) or best <= RIDGE_LIMITS[0] * (1 + 1e-9)
    assert best < max(scores)
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


@pytest.fixture(scope="module")
def grasshopper_split():
    recording = load_grasshopper(bin_width=0.005)
    train, val, test = recording.split((0.6, 0.2, 0.2), seed=0)
    return recording.select(train), recording.select(val), recording.select(test)


def held_out_bits_per_spike(split, **arguments):
    train, val, test = split
    model, _ = fit_ridge_by_validation(train, val, ridges=(0.01, 0.1, 1.0, 10.0, 100.0), **arguments)
    return bits_per_spike(score_window(test.y, 10), score_window(model.predict(test), 10))


def test_grasshopper_stimulus_glm_beats_null(grasshopper_split):
    # 20 lags of 5 ms cover 100 ms of stimulus.
    assert held_out_bits_per_spike(grasshopper_split, n_lags=20) > 0.05


def test_grasshopper_spike_history_adds_information(grasshopper_split):
    stimulus_only = held_out_bits_per_spike(grasshopper_split, n_lags=20)
    with_history = held_out_bits_per_spike(grasshopper_split, n_lags=20, spike_history_lags=10)
    assert with_history > stimulus_only


def test_grasshopper_homogeneous_poisson_near_zero(grasshopper_split):
    train, _, test = grasshopper_split
    prediction = HomogeneousPoisson().fit(train).predict(test)
    assert abs(bits_per_spike(test.y[:, 10:], prediction[:, 10:])) < 0.05

"""Balloon-Windkessel BOLD model: rest state, impulse response against an independent solver, likelihood."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.integrate import solve_ivp

from neuroude.errors import ConfigError
from neuroude.observation import BoldObservation
from neuroude.observation.bold import MIN_DRIVE, bold_signal, bounded_drive, hemodynamic_rates, simulate_bold

KEY = jax.random.PRNGKey(0)
BIN_WIDTH = 0.1
IMPULSE_SECONDS = 0.5
DURATION = 30.0


def _reference_response() -> tuple[np.ndarray, np.ndarray]:
    """Integrate the balloon equations in s, f, v, q (not logs) with scipy, from the published constants."""
    kappa, gamma, tau, alpha, rho, v0 = 0.65, 0.41, 0.98, 0.32, 0.34, 0.02

    def rates(t, state):
        s, f, v, q = state
        drive = 1.0 if t < IMPULSE_SECONDS else 0.0
        extraction = 1.0 - (1.0 - rho) ** (1.0 / f)
        return [
            drive - kappa * s - gamma * (f - 1.0),
            s,
            (f - v ** (1.0 / alpha)) / tau,
            (f * extraction / rho - v ** (1.0 / alpha) * q / v) / tau,
        ]

    ts = np.arange(0.0, DURATION, BIN_WIDTH)
    solution = solve_ivp(rates, (0.0, DURATION), [0.0, 1.0, 1.0, 1.0], t_eval=ts, max_step=0.01, rtol=1e-8, atol=1e-10)
    _, f, v, q = solution.y
    bold = v0 * (7.0 * rho * (1.0 - q) + 2.0 * (1.0 - q / v) + (2.0 * rho - 0.2) * (1.0 - v))
    return ts, bold


@pytest.fixture(scope="module")
def impulse_response():
    drive = np.zeros((int(round(DURATION / BIN_WIDTH)), 1), np.float32)
    drive[: int(round(IMPULSE_SECONDS / BIN_WIDTH))] = 1.0
    return np.asarray(simulate_bold(jnp.asarray(drive), BIN_WIDTH, 4))[:, 0]


def test_bold_rest_is_steady_state():
    rest = jnp.zeros((4, 3))  # s = 0 and log f = log v = log q = 0
    # Float32 rounding of E(1) = 1 - (1 - rho) leaves rates of order 1e-8; float64 shows they vanish.
    np.testing.assert_allclose(np.asarray(hemodynamic_rates(rest, jnp.zeros(3))), 0.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(bold_signal(rest)), 0.0)
    with jax.enable_x64(True):
        rest64 = jnp.zeros((4, 3), jnp.float64)
        np.testing.assert_allclose(np.asarray(hemodynamic_rates(rest64, jnp.zeros(3, jnp.float64))), 0.0, atol=1e-15)


def test_bold_zero_drive_stays_at_rest():
    bold = simulate_bold(jnp.zeros((200, 2)), BIN_WIDTH, 4)
    # A 0.5 s impulse of unit drive peaks at 0.015; rounding drift must stay far below that.
    np.testing.assert_allclose(np.asarray(bold), 0.0, atol=1e-6)


def test_bold_impulse_matches_independent_solver(impulse_response):
    _, reference = _reference_response()
    np.testing.assert_allclose(impulse_response, reference, atol=2e-3 * np.abs(reference).max())


def test_bold_impulse_peaks_then_undershoots(impulse_response):
    ts = np.arange(impulse_response.size) * BIN_WIDTH
    peak = int(np.argmax(impulse_response))
    trough = peak + int(np.argmin(impulse_response[peak:]))

    # With these constants a 0.5 s impulse gives a peak 3.2 s after onset and the undershoot's trough near 9.3 s.
    assert ts[peak] == pytest.approx(3.2, abs=0.15)
    assert impulse_response[peak] > 0.01
    assert ts[trough] == pytest.approx(9.3, abs=0.3)
    assert impulse_response[trough] < -0.1 * impulse_response[peak]
    assert abs(impulse_response[-1]) < 0.1 * abs(impulse_response[trough])


def test_bold_log_prob_reads_only_masked_bins():
    model = BoldObservation(2, 3, BIN_WIDTH, key=KEY)
    x = jax.random.normal(KEY, (40, 2))
    y = jax.random.normal(jax.random.PRNGKey(1), (40, 3))
    # Acquisitions every 2 s (20 bins): the model runs on the fine grid and is read at those bins only.
    mask = jnp.zeros_like(y).at[::20].set(1.0)
    terms = stats.norm.logpdf(np.asarray(y), np.asarray(model.mean(x)), 1.0)
    assert float(model.log_prob(y, x, mask)) == pytest.approx(terms[::20].sum(), rel=1e-5)


def test_bold_rejects_bad_substeps():
    with pytest.raises(ConfigError, match="n_substeps is 0"):
        BoldObservation(2, 3, BIN_WIDTH, n_substeps=0, key=KEY)


def test_bold_strong_deactivation_stays_finite():
    readout = jnp.concatenate([jnp.full((60, 1), -50.0), jnp.full((60, 1), 5.0), jnp.full((60, 1), -50.0)])
    drive = bounded_drive(readout)
    assert float(drive.min()) >= np.float32(-MIN_DRIVE)
    bold, gradient = jax.value_and_grad(lambda z: simulate_bold(z, BIN_WIDTH, 4).sum())(drive)
    assert np.isfinite(float(bold))
    assert np.all(np.isfinite(np.asarray(gradient)))

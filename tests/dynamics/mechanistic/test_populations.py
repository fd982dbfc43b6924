"""Reference behaviour of the population, oscillator and test-system models.

Trajectories are integrated in float32 by a local fourth-order Runge-Kutta
`lax.scan` (or the package's fixed-step solver for the stochastic Jansen-Rit
case) and compared with closed forms, published figures or float64 scipy
integrations written independently here.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.integrate import solve_ivp
from scipy.signal import welch

from neuroude.dynamics.mechanistic.jansen_rit import JansenRit
from neuroude.dynamics.mechanistic.kuramoto import Kuramoto
from neuroude.dynamics.mechanistic.linear import LinearDynamics
from neuroude.dynamics.mechanistic.lorenz import Lorenz
from neuroude.dynamics.mechanistic.rate_network import RateNetwork
from neuroude.dynamics.mechanistic.stuart_landau import StuartLandau
from neuroude.dynamics.mechanistic.van_der_pol import VanDerPol
from neuroude.dynamics.mechanistic.wilson_cowan import WilsonCowan
from neuroude.dynamics.parameters import trainable_filter
from neuroude.errors import ConfigError
from neuroude.solve import solve_fixed_step

KEY = jax.random.PRNGKey(0)


@eqx.filter_jit
def integrate_rk4(model, x0, step, n_steps: int, stride: int = 1):
    """Integrate `dx/dt = model(t, x, 0)` with classical RK4; return every `stride`-th state after x0."""
    no_input = jnp.zeros((0,), jnp.float32)

    def drift(x):
        return model(0.0, x, no_input)

    def rk4_step(x, _):
        k1 = drift(x)
        k2 = drift(x + 0.5 * step * k1)
        k3 = drift(x + 0.5 * step * k2)
        k4 = drift(x + step * k3)
        return x + step / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4), None

    def strided(x, _):
        x, _ = jax.lax.scan(rk4_step, x, None, length=stride)
        return x, x

    _, path = jax.lax.scan(strided, x0, None, length=n_steps // stride)
    return path


def upward_crossing_times(signal: np.ndarray, times: np.ndarray, level: float) -> np.ndarray:
    """Return the times at which `signal` crosses `level` upwards, by linear interpolation."""
    index = np.where((signal[:-1] < level) & (signal[1:] >= level))[0]
    fraction = (level - signal[index]) / (signal[index + 1] - signal[index])
    return times[index] + fraction * (times[index + 1] - times[index])


# Every model with a way to build it with `input_size` inputs and constant overrides.
MODELS = {
    "wilson_cowan": lambda input_size=0, **kw: WilsonCowan(input_size, **kw),
    "rate_network": lambda input_size=0, **kw: RateNetwork(input_size, size=5, key=KEY, **kw),
    "jansen_rit": lambda input_size=0, **kw: JansenRit(input_size, **kw),
    "linear": lambda input_size=0, **kw: LinearDynamics(input_size, size=4, key=KEY, **kw),
    "stuart_landau": lambda input_size=0, **kw: StuartLandau(input_size, **kw),
    "kuramoto": lambda input_size=0, **kw: Kuramoto(input_size, size=6, key=KEY, **kw),
    "lorenz": lambda input_size=0, **kw: Lorenz(input_size, **kw),
    "van_der_pol": lambda input_size=0, **kw: VanDerPol(input_size, **kw),
}

# One constant per model to override and freeze, with a valid value different from its default.
OVERRIDES = {
    "wilson_cowan": ("w_ee", 13.0),
    "rate_network": ("tau", 0.05),
    "jansen_rit": ("C", 120.0),
    "stuart_landau": ("omega", 3.0),
    "kuramoto": ("coupling", 2.5),
    "lorenz": ("rho", 15.0),
    "van_der_pol": ("mu", 2.5),
}


# ---------------------------------------------------------------- shared interface


@pytest.mark.parametrize("name", sorted(MODELS))
def test_drift_shape_and_dtype(name):
    model = MODELS[name](input_size=2)
    x = jnp.full((model.state_size,), 0.1, jnp.float32)
    drift = jax.jit(model.__call__)(0.0, x, jnp.ones((2,), jnp.float32))
    assert drift.shape == (model.state_size,)
    assert drift.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(drift)))
    assert all(0 <= index < model.state_size for index in model.observable)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_input_changes_drift(name):
    model = MODELS[name](input_size=1)
    x = jnp.full((model.state_size,), 0.1, jnp.float32)
    without = model(0.0, x, jnp.zeros((1,), jnp.float32))
    with_input = model(0.0, x, jnp.ones((1,), jnp.float32))
    assert float(jnp.max(jnp.abs(with_input - without))) > 0.0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_no_weak_typed_leaves(name):
    model = MODELS[name](input_size=2)
    for leaf in jax.tree_util.tree_leaves(model):
        assert not getattr(leaf, "weak_type", False)
        assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_constant_raises(name):
    with pytest.raises(ConfigError, match="unknown .* constants"):
        MODELS[name](not_a_constant=1.0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_unknown_frozen_name_raises(name):
    with pytest.raises(ConfigError, match="frozen names"):
        MODELS[name](frozen=("not_a_constant",))


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_override_sets_value(name):
    constant, value = OVERRIDES[name]
    default = float(getattr(MODELS[name](), constant).value)
    overridden = float(getattr(MODELS[name](**{constant: value}), constant).value)
    assert default != pytest.approx(value)
    assert overridden == pytest.approx(value, rel=1e-5)


@pytest.mark.parametrize("name", sorted(OVERRIDES))
def test_frozen_constant_has_no_gradient(name):
    constant, _ = OVERRIDES[name]
    frozen = MODELS[name](frozen=(constant,))
    learnable = MODELS[name]()
    assert getattr(trainable_filter(frozen), constant).raw is False
    assert getattr(trainable_filter(learnable), constant).raw is True

    x = jnp.linspace(0.1, 0.5, frozen.state_size, dtype=jnp.float32)
    u = jnp.zeros((0,), jnp.float32)

    def loss(model):
        return jnp.sum(model(0.0, x, u) ** 2)

    frozen_grad = getattr(eqx.filter_grad(loss)(frozen), constant).raw
    learnable_grad = getattr(eqx.filter_grad(loss)(learnable), constant).raw
    assert float(frozen_grad) == 0.0
    assert float(learnable_grad) != 0.0


def test_linear_has_no_constants():
    with pytest.raises(ConfigError, match="frozen names"):
        LinearDynamics(size=2, key=KEY, frozen=("A",))


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: RateNetwork(size=0, key=KEY), "size is 0"),
        (lambda: RateNetwork(size=3), "key is None"),
        (lambda: RateNetwork(size=3, key=KEY, gain=-1.0), "gain is -1.0"),
        (lambda: LinearDynamics(size=3, key=KEY, coupling=1.5), "coupling is 1.5"),
        (lambda: LinearDynamics(size=3, key=KEY, tau=0.0), "tau is 0.0"),
        (lambda: Kuramoto(size=3), "key is None"),
        (lambda: Kuramoto(size=3, frequencies=[1.0, 2.0]), "size is 3 but 2 frequencies"),
        (lambda: Kuramoto(frequencies=[[1.0, 2.0]]), r"shape \(1, 2\)"),
    ],
)
def test_sized_model_arguments_checked(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


# ---------------------------------------------------------------- Stuart-Landau


@pytest.mark.parametrize("mu", [0.25, 4.0])
def test_stuart_landau_limit_cycle(mu):
    omega = 2.0 * math.pi * 10.0
    model = StuartLandau(mu=mu, omega=omega)
    starts = jnp.array([[0.01, 0.0], [0.0, -0.3], [3.0, 3.0], [-1.5, 0.5]], jnp.float32)
    step = 1e-3
    # The radius relaxes at rate 2 mu, so 12 / mu seconds leave exp(-24) of the initial error.
    n_steps = int(12.0 / mu / step)
    paths = jax.vmap(lambda x0: integrate_rk4(model, x0, step, n_steps))(starts)
    paths = np.asarray(paths, dtype=np.float64)

    for path in paths:
        last_second = path[-1000:]
        radius = np.hypot(last_second[:, 0], last_second[:, 1])
        assert np.max(np.abs(radius / math.sqrt(mu) - 1.0)) < 0.01

        phase = np.unwrap(np.arctan2(last_second[:, 1], last_second[:, 0]))
        frequency = (phase[-1] - phase[0]) / (step * (len(phase) - 1))
        assert frequency == pytest.approx(omega, rel=0.01)


def test_stuart_landau_decays_below_bifurcation():
    model = StuartLandau(mu=-2.0)
    starts = jnp.array([[1.0, 0.0], [-2.0, 2.0], [0.0, 0.5]], jnp.float32)
    # |z| <= |z0| exp(mu t): after 5 s at mu = -2 that is at most 2.83 * 4.5e-5.
    paths = jax.vmap(lambda x0: integrate_rk4(model, x0, 1e-3, 5000))(starts)
    final_radius = np.hypot(paths[:, -1, 0], paths[:, -1, 1])
    assert np.all(final_radius < 1e-3)


def test_stuart_landau_drift_formula():
    model = StuartLandau(1, mu=0.7, omega=5.0)
    x, y, u = 0.4, -1.2, 2.0
    drift = model(0.0, jnp.array([x, y], jnp.float32), jnp.array([u], jnp.float32))
    radius_squared = x**2 + y**2
    assert float(drift[0]) == pytest.approx(0.7 * x - 5.0 * y - radius_squared * x + 0.5 * u, rel=1e-5)
    assert float(drift[1]) == pytest.approx(5.0 * x + 0.7 * y - radius_squared * y, rel=1e-5)


# ---------------------------------------------------------------- Kuramoto


def lorentzian_quantiles(size: int, half_width: float) -> np.ndarray:
    """Return `size` frequencies at the mid-quantiles of a Lorentzian centred on 0."""
    quantiles = (np.arange(size) + 0.5) / size
    return half_width * np.tan(np.pi * (quantiles - 0.5))


@pytest.mark.parametrize("coupling", [1.0, 3.0, 4.0, 8.0])
def test_kuramoto_order_parameter_lorentzian(coupling):
    half_width = 1.0
    critical = 2.0 * half_width
    model = Kuramoto(frequencies=lorentzian_quantiles(1000, half_width), coupling=coupling)

    # Starting in phase, R relaxes to its stationary value at rate |K - K_c| / 2 or faster
    # (Ott-Antonsen reduction), so 30 s at K = 1 leaves exp(-15) of the start.
    step = 0.01
    path = integrate_rk4(model, jnp.zeros(1000, jnp.float32), step, 4000, 10)
    order = np.asarray(model.order_parameter(path))
    stationary = float(np.mean(order[-100:]))  # mean over the last 10 s

    expected = math.sqrt(1.0 - critical / coupling) if coupling > critical else 0.0
    # Finite-size fluctuations of R have a standard deviation of about 0.01 at N = 1000.
    assert stationary == pytest.approx(expected, abs=0.03)


def test_kuramoto_drift_formula():
    frequencies = np.array([1.0, -0.5, 2.0], dtype=np.float64)
    model = Kuramoto(1, frequencies=frequencies, coupling=1.7)
    theta = np.array([0.3, 2.0, -1.1])
    drift = model(0.0, jnp.asarray(theta, jnp.float32), jnp.array([2.0], jnp.float32))
    pairwise = np.sin(theta[None, :] - theta[:, None]).sum(axis=1)
    expected = frequencies + 1.7 / 3 * pairwise + 0.5 * 2.0
    np.testing.assert_allclose(np.asarray(drift), expected, rtol=1e-5, atol=1e-6)


def test_kuramoto_draws_frequencies_from_key():
    model = Kuramoto(size=2000, key=KEY, mean_frequency=5.0, frequency_spread=2.0)
    omega = np.asarray(model.omega)
    assert model.state_size == 2000
    assert model.observable == tuple(range(2000))
    # Standard error of the mean is 2 / sqrt(2000) = 0.045, of the standard deviation about 0.032.
    assert np.mean(omega) == pytest.approx(5.0, abs=0.2)
    assert np.std(omega) == pytest.approx(2.0, abs=0.15)


# ---------------------------------------------------------------- Jansen-Rit


def jansen_rit_peak_frequency(output: np.ndarray, sample_rate: float) -> float:
    frequencies, power = welch(output - output.mean(), fs=sample_rate, nperseg=2048)
    return float(frequencies[np.argmax(power)])


def test_jansen_rit_alpha_limit_cycle_constant_input():
    model = JansenRit()  # p = 220 pulses/s
    bin_width = 1e-3

    def fields(t, x, k, frac):
        return model(t, x, jnp.zeros((0,), jnp.float32)), jnp.zeros(6, jnp.float32), jnp.zeros((), jnp.float32)

    solve = jax.jit(lambda x0: solve_fixed_step(fields, x0, 0.0, bin_width, 10_000, 10, None, "heun")[0])
    path = np.asarray(solve(jnp.zeros(6, jnp.float32)), dtype=np.float64)
    output = JansenRit.output(path)[2000:]  # drop the first 2 s

    # Measured: 10.74 Hz at a Welch resolution of 0.49 Hz.
    assert 8.0 <= jansen_rit_peak_frequency(output, 1.0 / bin_width) <= 12.0
    # A sustained oscillation, not a damped one: the last second still swings by more than 1 mV.
    assert np.ptp(output[-1000:]) > 1.0


def test_jansen_rit_alpha_peak_with_noisy_input():
    model = JansenRit()
    A, a = 3.25, 100.0
    # p = 220 + white noise of intensity 1.8 pulses/s * sqrt(s), the intensity of Jansen & Rit's
    # uniform 120-320 pulses/s draws (standard deviation 57.7) if drawn once per millisecond.
    noise_intensity = 57.7 * math.sqrt(1e-3)
    diffusion = jnp.zeros(6, jnp.float32).at[4].set(A * a * noise_intensity)
    bin_width = 1e-3

    def fields(t, x, k, frac):
        return model(t, x, jnp.zeros((0,), jnp.float32)), diffusion, jnp.zeros((), jnp.float32)

    solve = jax.jit(lambda x0, key: solve_fixed_step(fields, x0, 0.0, bin_width, 20_000, 10, key, "euler")[0])
    path = np.asarray(solve(jnp.zeros(6, jnp.float32), jax.random.PRNGKey(1)), dtype=np.float64)
    output = JansenRit.output(path)[2000:]

    assert 8.0 <= jansen_rit_peak_frequency(output, 1.0 / bin_width) <= 12.0


def test_jansen_rit_drift_formula():
    model = JansenRit(1)
    rng = np.random.default_rng(3)
    y = rng.normal(0.0, 5.0, 6)
    u = 1.5
    drift = np.asarray(model(0.0, jnp.asarray(y, jnp.float32), jnp.array([u], jnp.float32)))

    def sigmoid(v):
        return 2 * 2.5 / (1 + np.exp(0.56 * (6.0 - v)))

    c = 135.0
    expected = [
        y[3],
        y[4],
        y[5],
        3.25 * 100 * sigmoid(y[1] - y[2]) - 200 * y[3] - 100**2 * y[0],
        3.25 * 100 * (220 + 10 * u + 0.8 * c * sigmoid(c * y[0])) - 200 * y[4] - 100**2 * y[1],
        22 * 50 * 0.25 * c * sigmoid(0.25 * c * y[0]) - 100 * y[5] - 50**2 * y[2],
    ]
    np.testing.assert_allclose(drift, expected, rtol=1e-4, atol=1e-2)


# ---------------------------------------------------------------- Wilson-Cowan


def wilson_cowan_reference(t, state):
    """Wilson & Cowan (1972) limit-cycle set in units of tau, written out independently in float64."""
    e, i = state

    def response(x, gain, threshold):
        return 1 / (1 + np.exp(-gain * (x - threshold))) - 1 / (1 + np.exp(gain * threshold))

    k_e = 1 - 1 / (1 + np.exp(1.3 * 4.0))
    k_i = 1 - 1 / (1 + np.exp(2.0 * 3.7))
    de = -e + (k_e - e) * response(16 * e - 12 * i + 1.25, 1.3, 4.0)
    di = -i + (k_i - i) * response(15 * e - 3 * i, 2.0, 3.7)
    return [de, di]


def test_wilson_cowan_limit_cycle_matches_scipy():
    tau = 0.01
    level = 0.2  # inside the cycle's E range of about 0.09-0.27

    def upward(t, state):
        return state[0] - level

    upward.direction = 1
    reference = solve_ivp(
        wilson_cowan_reference, (0.0, 100.0), [0.1, 0.05], method="DOP853", rtol=1e-10, atol=1e-12, events=upward
    )
    reference_period = float(np.median(np.diff(reference.t_events[0][5:]))) * tau
    late = reference.t > 50.0
    reference_range = (reference.y[0, late].min(), reference.y[0, late].max())

    model = WilsonCowan()
    step = 1e-5
    path = np.asarray(integrate_rk4(model, jnp.array([0.1, 0.05], jnp.float32), step, 100_000), dtype=np.float64)
    times = step * np.arange(1, len(path) + 1)
    late = times > 0.5
    crossings = upward_crossing_times(path[late, 0], times[late], level)
    period = float(np.median(np.diff(crossings)))

    # Measured: 4.996 tau from scipy, 49.96 ms from the model at tau = 10 ms.
    assert reference_period == pytest.approx(0.04996, rel=1e-3)
    assert period == pytest.approx(reference_period, rel=2e-3)
    assert path[late, 0].min() == pytest.approx(reference_range[0], abs=2e-3)
    assert path[late, 0].max() == pytest.approx(reference_range[1], abs=2e-3)


def test_wilson_cowan_time_constants_scale_period():
    step = 2e-5
    periods = []
    for tau in (0.01, 0.02):
        model = WilsonCowan(tau_e=tau, tau_i=tau)
        n_steps = round(100_000 * tau / 0.01)  # 200 tau
        path = np.asarray(integrate_rk4(model, jnp.array([0.1, 0.05], jnp.float32), step, n_steps, 10))
        times = 10 * step * np.arange(1, len(path) + 1)
        late = times > 50 * tau
        periods.append(np.median(np.diff(upward_crossing_times(path[late, 0], times[late], 0.2))))
    assert periods[1] / periods[0] == pytest.approx(2.0, rel=5e-3)


def test_wilson_cowan_input_weights():
    model = WilsonCowan(3)
    np.testing.assert_array_equal(np.asarray(model.input_gain[0]), [0.5, 0.5, 0.5])
    np.testing.assert_array_equal(np.asarray(model.input_gain[1]), [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- rate network


def test_rate_network_decays_below_unit_gain():
    model = RateNetwork(size=100, key=KEY, gain=0.5)
    x0 = jax.random.normal(jax.random.PRNGKey(1), (100,), jnp.float32)
    step = 1e-4
    # 200 ms = 20 tau. The Jacobian's eigenvalues have real parts below about -0.5 / tau.
    path = integrate_rk4(model, x0, step, 2000, 100)
    ratio = float(jnp.linalg.norm(path[-1]) / jnp.linalg.norm(x0))
    assert ratio < 1e-3


def test_rate_network_stays_active_above_unit_gain():
    # The contrasting case: for g = 2 the origin is unstable and activity persists.
    model = RateNetwork(size=100, key=KEY, gain=2.0)
    x0 = 0.1 * jax.random.normal(jax.random.PRNGKey(1), (100,), jnp.float32)
    path = integrate_rk4(model, x0, 1e-4, 2000, 100)
    assert float(jnp.linalg.norm(path[-1]) / jnp.linalg.norm(x0)) > 1.0


def test_rate_network_drift_formula():
    model = RateNetwork(2, size=6, key=KEY, gain=1.3, tau=0.02)
    rng = np.random.default_rng(4)
    bias = rng.normal(size=6).astype(np.float32)
    model = eqx.tree_at(lambda m: m.b, model, jnp.asarray(bias))
    x = rng.normal(size=6)
    u = rng.normal(size=2)
    drift = np.asarray(model(0.0, jnp.asarray(x, jnp.float32), jnp.asarray(u, jnp.float32)))

    J = np.asarray(model.J, dtype=np.float64)
    B = np.asarray(model.B, dtype=np.float64)
    expected = (-x + J @ np.tanh(x) + B @ u + bias) / 0.02
    np.testing.assert_allclose(drift, expected, rtol=1e-4, atol=1e-3)


def test_rate_network_weight_scale():
    size, gain = 400, 1.5
    model = RateNetwork(size=size, key=KEY, gain=gain)
    # The sample standard deviation of 160000 entries is within 1% of g / sqrt(N).
    assert float(jnp.std(model.J)) == pytest.approx(gain / math.sqrt(size), rel=0.01)
    assert model.state_size == size
    assert model.observable == tuple(range(size))


# ---------------------------------------------------------------- linear


def test_linear_drift_formula():
    model = LinearDynamics(3, size=4, key=KEY)
    rng = np.random.default_rng(5)
    bias = rng.normal(size=4).astype(np.float32)
    model = eqx.tree_at(lambda m: m.b, model, jnp.asarray(bias))
    x = rng.normal(size=4)
    u = rng.normal(size=3)
    drift = np.asarray(model(0.0, jnp.asarray(x, jnp.float32), jnp.asarray(u, jnp.float32)))
    expected = np.asarray(model.A, np.float64) @ x + np.asarray(model.B, np.float64) @ u + bias
    np.testing.assert_allclose(drift, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_linear_initial_matrix_is_stable(seed):
    tau, coupling = 0.1, 0.5
    model = LinearDynamics(size=8, key=jax.random.PRNGKey(seed), tau=tau, coupling=coupling)
    eigenvalues = np.linalg.eigvals(np.asarray(model.A, np.float64))
    assert np.max(eigenvalues.real) <= -(1 - coupling) / tau + 1e-3


def test_linear_solution_matches_matrix_exponential():
    model = LinearDynamics(size=5, key=KEY, tau=0.1, coupling=0.9)
    x0 = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    step, n_steps = 1e-3, 300
    path = np.asarray(integrate_rk4(model, jnp.asarray(x0, jnp.float32), step, n_steps, 100), np.float64)
    A = np.asarray(model.A, np.float64)
    for index, state in enumerate(path):
        t = step * 100 * (index + 1)
        expected = scipy.linalg.expm(A * t) @ x0
        np.testing.assert_allclose(state, expected, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Lorenz


def test_lorenz_drift_formula():
    model = Lorenz(1, time_scale=3.0)
    x, y, z, u = 1.5, -2.0, 20.0, 0.4
    drift = np.asarray(model(0.0, jnp.array([x, y, z], jnp.float32), jnp.array([u], jnp.float32)))
    expected = 3.0 * np.array([10 * (y - x) + 0.5 * u, x * (28 - z) - y, x * y - 8 / 3 * z])
    np.testing.assert_allclose(drift, expected, rtol=1e-5)


def test_lorenz_short_horizon_matches_scipy():
    model = Lorenz(time_scale=10.0)
    x0 = [1.0, 1.0, 1.0]

    def reference(t, state):
        x, y, z = state
        return [10.0 * 10 * (y - x), 10.0 * (x * (28 - z) - y), 10.0 * (x * y - 8 / 3 * z)]

    step = 1e-4  # 1e-3 in Lorenz's dimensionless time
    path = np.asarray(integrate_rk4(model, jnp.asarray(x0, jnp.float32), step, 1000, 100), np.float64)
    times = step * 100 * np.arange(1, 11)
    solution = solve_ivp(reference, (0.0, 0.1), x0, method="DOP853", rtol=1e-11, atol=1e-11, t_eval=times)
    # One dimensionless time unit, so float32 rounding grows by at most exp(0.9) before it is compared.
    np.testing.assert_allclose(path, solution.y.T, rtol=1e-3, atol=1e-3)


def test_lorenz_attractor_statistics():
    model = Lorenz(time_scale=1.0)
    starts = jnp.array([[1.0, 1.0, 1.0], [-5.0, 3.0, 20.0], [10.0, -10.0, 30.0], [0.1, 0.0, 0.0]], jnp.float32)
    step = 0.005
    paths = jax.vmap(lambda x0: integrate_rk4(model, x0, step, 200_000, 10))(starts)
    paths = np.asarray(paths, np.float64)[:, 2000:]  # drop the first 100 time units

    # The attractor lies well inside |x|, |y| < 30 and 0 < z < 50.
    assert np.max(np.abs(paths[..., :2])) < 30.0
    assert np.min(paths[..., 2]) > 0.0
    assert np.max(paths[..., 2]) < 50.0

    for path in paths:
        mean_z = path[:, 2].mean()
        # Averages over 110 time units spread by 0.09, so the mean over 900 units has a standard
        # error near 0.03. 0.3 is ten of those around the commonly cited value 23.55.
        assert mean_z == pytest.approx(23.55, abs=0.3)
        # The time average of dz/dt = xy - beta z vanishes, so <xy> = beta <z> up to
        # (z(T) - z(0)) / (beta T) < 50 / (8/3 * 900) = 0.02.
        assert (path[:, 0] * path[:, 1]).mean() / (8 / 3) == pytest.approx(mean_z, abs=0.05)


# ---------------------------------------------------------------- Van der Pol


@pytest.mark.parametrize("time_scale", [1.0, 50.0])
def test_van_der_pol_period(time_scale):
    model = VanDerPol(mu=1.0, time_scale=time_scale)
    step = 0.002 / time_scale
    path = np.asarray(integrate_rk4(model, jnp.array([2.0, 0.0], jnp.float32), step, 20_000), np.float64)
    times = step * np.arange(1, len(path) + 1)
    late = times > 10.0 / time_scale
    period = float(np.median(np.diff(upward_crossing_times(path[late, 0], times[late], 0.0))))
    # The mu = 1 limit-cycle period is 6.6633 in dimensionless time. Measured: 6.66328.
    assert period * time_scale == pytest.approx(6.6633, rel=0.01)
    # The amplitude of the mu = 1 cycle is close to 2.
    assert np.max(path[late, 0]) == pytest.approx(2.0, abs=0.05)


def test_van_der_pol_drift_formula():
    model = VanDerPol(1, mu=1.5, time_scale=4.0, i_ext=0.3)
    x, y, u = 0.7, -1.1, 2.0
    drift = np.asarray(model(0.0, jnp.array([x, y], jnp.float32), jnp.array([u], jnp.float32)))
    expected = 4.0 * np.array([y, 1.5 * (1 - x**2) * y - x + 0.3 + 0.5 * u])
    np.testing.assert_allclose(drift, expected, rtol=1e-5)

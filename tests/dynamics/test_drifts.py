"""Network drifts, diffusions and the grey-box residual."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.dynamics import (
    AdditiveDiffusion,
    FitzHughNagumo,
    InputScaledDiffusion,
    NetworkDiffusion,
    NeuralDrift,
    ResidualDrift,
)
from neuroude.errors import ConfigError

KEY = jax.random.PRNGKey(0)
X = jnp.array([0.3, -0.4])
U = jnp.array([1.5])


def test_neural_drift_leak_and_time_constant():
    drift = NeuralDrift(2, 1, 8, 1, time_constant=0.05, key=KEY)
    network = drift.mlp(jnp.concatenate([X, U]))
    np.testing.assert_allclose(np.asarray(drift(0.0, X, U)), np.asarray((network - X) / 0.05), rtol=1e-5)


def test_neural_drift_rejects_bad_time_constant():
    with pytest.raises(ConfigError, match="time_constant"):
        NeuralDrift(2, 1, time_constant=0.0, key=KEY)


def test_residual_starts_at_mechanistic_model():
    mechanistic = FitzHughNagumo(1)
    residual = ResidualDrift(mechanistic, 1, 8, 1, key=KEY)
    np.testing.assert_array_equal(np.asarray(residual(0.0, X, U)), np.asarray(mechanistic(0.0, X, U)))


def test_residual_penalty_must_be_nonnegative():
    with pytest.raises(ConfigError, match="residual_penalty"):
        ResidualDrift(FitzHughNagumo(1), 1, residual_penalty=-1.0, key=KEY)


def test_additive_diffusion_initial_scale():
    np.testing.assert_allclose(np.asarray(AdditiveDiffusion(2, 0.3)(0.0, X, U)), [0.3, 0.3], rtol=1e-5)


def test_network_diffusion_positive_and_state_dependent():
    diffusion = NetworkDiffusion(2, 1, key=KEY)
    states = jax.random.normal(KEY, (50, 2)) * 3
    scales = jax.vmap(lambda x: diffusion(0.0, x, U))(states)
    assert bool(jnp.all(scales > 0))
    assert float(jnp.std(scales[:, 0])) > 0.0


def test_network_diffusion_uses_input_only_when_asked():
    plain = NetworkDiffusion(2, 1, uses_input=False, key=KEY)
    driven = NetworkDiffusion(2, 1, uses_input=True, key=KEY)
    np.testing.assert_array_equal(np.asarray(plain(0.0, X, U)), np.asarray(plain(0.0, X, U + 5)))
    assert not np.allclose(np.asarray(driven(0.0, X, U)), np.asarray(driven(0.0, X, U + 5)))


def test_input_scaled_diffusion_positive():
    diffusion = InputScaledDiffusion(2, 1, 0.2)
    np.testing.assert_allclose(np.asarray(diffusion(0.0, X, U)), [0.2, 0.2], rtol=1e-5)

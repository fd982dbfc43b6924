"""Stimulus encoders and input interpolation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.errors import ConfigError
from neuroude.stimulus import IdentityEncoder, LinearEncoder, MLPEncoder, input_at, make_encoder

DRIVE = jnp.array([[0.0], [2.0], [4.0]])


def test_hold_keeps_bin_value():
    assert float(input_at(DRIVE, 1, 0.75, "hold")[0]) == 2.0


def test_linear_interpolates_to_next_bin():
    assert float(input_at(DRIVE, 1, 0.25, "linear")[0]) == pytest.approx(2.5)


def test_linear_at_last_bin_holds():
    assert float(input_at(DRIVE, 2, 0.5, "linear")[0]) == 4.0


def test_encoder_output_shapes():
    stimulus = jnp.ones((7, 3))
    key = jax.random.PRNGKey(0)
    assert IdentityEncoder(3)(stimulus).shape == (7, 3)
    assert LinearEncoder(3, 5, key=key)(stimulus).shape == (7, 5)
    assert MLPEncoder(3, 4, key=key)(stimulus).shape == (7, 4)


def test_linear_encoder_is_affine_per_bin():
    encoder = LinearEncoder(2, 2, key=jax.random.PRNGKey(1))
    stimulus = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    expected = stimulus @ encoder.linear.weight.T + encoder.linear.bias
    np.testing.assert_allclose(np.asarray(encoder(stimulus)), np.asarray(expected), rtol=1e-6)


def test_unknown_encoder_rejected():
    with pytest.raises(ConfigError, match="stimulus encoder is 'cnn'"):
        make_encoder("cnn", 1, 1, key=jax.random.PRNGKey(0))

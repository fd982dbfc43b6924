"""Segmented, recomputed scans and sums give the plain results and their gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.segments import checkpointed_scan, checkpointed_sum


def gru_like_step(hidden, feature):
    hidden = jnp.tanh(0.7 * hidden + feature[:2] * feature[2])
    return hidden, hidden * 2.0


@pytest.mark.parametrize("segment", [0, 1, 3, 4, 50])
def test_checkpointed_scan_matches_scan(segment):
    xs = jax.random.normal(jax.random.key(0), (10, 3))

    def loss(xs, segment):
        carry, ys = checkpointed_scan(gru_like_step, jnp.array([0.1, -0.2]), xs, segment)
        return jnp.sum(carry) + jnp.sum(ys**2), ys

    (plain, plain_ys), plain_grad = jax.value_and_grad(loss, has_aux=True)(xs, 0)
    (value, ys), grad = jax.value_and_grad(loss, has_aux=True)(xs, segment)

    assert ys.shape == plain_ys.shape == (10, 2)
    np.testing.assert_allclose(ys, plain_ys, rtol=1e-6)
    assert float(value) == pytest.approx(float(plain), rel=1e-6)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("segment", [1, 3, 7])
def test_checkpointed_sum_matches_sum(segment):
    y = jax.random.poisson(jax.random.key(1), 2.0, (10, 4)).astype(jnp.float32)
    rates = jax.random.uniform(jax.random.key(2), (10, 4), minval=0.5, maxval=3.0)
    mask = jnp.ones_like(y).at[2, 1].set(0.0)

    def poisson(y, rates, mask):
        return jnp.sum((y * jnp.log(rates + 1e-9) - rates) * mask)

    plain, plain_grad = jax.value_and_grad(lambda r: poisson(y, r, mask))(rates)
    value, grad = jax.value_and_grad(lambda r: checkpointed_sum(poisson, (y, r, mask), segment))(rates)

    assert float(value) == pytest.approx(float(plain), rel=1e-6)
    np.testing.assert_allclose(grad, plain_grad, rtol=1e-6)

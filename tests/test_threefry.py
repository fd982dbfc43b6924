"""`threefry_normal` must return the values of `jax.random.normal` bit for bit, or fall back to it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neuroude.threefry import threefry2x32, threefry_normal

KEYS = {
    "typed": jax.random.key(3),
    "raw": jax.random.PRNGKey(7),
    "folded": jax.random.fold_in(jax.random.key(1), 99),
}


@pytest.mark.parametrize("shape", [(7,), (4, 47)])
@pytest.mark.parametrize("name", sorted(KEYS))
def test_threefry_normal_equals_jax(name, shape):
    key = KEYS[name]
    drawn = threefry_normal(key, shape)
    expected = jax.random.normal(key, shape)
    assert drawn.shape == expected.shape
    assert drawn.dtype == expected.dtype
    np.testing.assert_array_equal(drawn, expected)


def test_threefry_normal_under_vmap():
    keys = jax.random.split(jax.random.key(0), 4)
    drawn = jax.vmap(lambda key: threefry_normal(key, (20, 3)))(keys)
    expected = jax.vmap(lambda key: jax.random.normal(key, (20, 3)))(keys)
    np.testing.assert_array_equal(drawn, expected)


def test_threefry_normal_float64():
    with jax.enable_x64(True):
        key = jax.random.key(5)
        drawn = threefry_normal(key, (100, 3), jnp.float64)
        expected = jax.random.normal(key, (100, 3), jnp.float64)
    assert drawn.dtype == jnp.float64
    np.testing.assert_array_equal(drawn, expected)


def test_threefry_normal_falls_back_for_other_keys():
    key = jax.random.key(2, impl="rbg")
    np.testing.assert_array_equal(threefry_normal(key, (6,)), jax.random.normal(key, (6,)))


@pytest.mark.parametrize(
    ("key", "counter", "expected"),
    [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ],
)
def test_threefry2x32_known_answers(key, counter, expected):
    # Known answers of Threefry-2x32 with 20 rounds from Random123 (the vectors JAX's own tests use).
    words = threefry2x32(*(np.uint32(word) for word in key), *(jnp.uint32(word) for word in counter))
    assert tuple(int(word) for word in words) == expected

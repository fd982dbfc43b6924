"""Standard normal draws equal to `jax.random.normal`, with the Threefry hash unrolled for the CPU.

On the CPU, JAX 0.10.2 lowers its Threefry-2x32 hash as a rolled loop over
the 5 groups of 4 rounds (`jax/_src/random/threefry2x32.py`). XLA then
cannot fuse the rounds with each other or with the conversion to normals.
`threefry_normal` computes the same hash, with the rotation constants and
key schedule of JAX's `threefry2x32`, written out in full, so XLA fuses the
whole draw into one loop. On a 2-core x86 machine this drew the increments of
`simulate_network` about 3 times faster (see benchmarks/README.md). For a
Threefry key it returns the values of `jax.random.normal(key, shape, dtype)`
bit for bit, and a test checks this against the installed JAX. Other keys,
dtypes and settings fall back to `jax.random.normal`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

# Rotation distances of the even and odd groups of 4 rounds, and the key schedule's parity constant.
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
KEY_PARITY = 0x1BD11BDA


def _rotate_left(x, distance: int):
    return (x << np.uint32(distance)) | (x >> np.uint32(32 - distance))


def threefry2x32(key1, key2, count1, count2):
    """Return the 20-round Threefry-2x32 hash of the counter words `(count1, count2)` under the key `(key1, key2)`."""
    schedule = (key1, key2, key1 ^ key2 ^ np.uint32(KEY_PARITY))
    x1, x2 = count1 + schedule[0], count2 + schedule[1]
    for group in range(5):
        for distance in ROTATIONS[group % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, distance) ^ x1
        # Key injection after every 4 rounds, with the group number added to the second word.
        x1 = x1 + schedule[(group + 1) % 3]
        x2 = x2 + schedule[(group + 2) % 3] + np.uint32(group + 1)
    return x1, x2


def _has_unrolled_path(key, shape: tuple[int, ...], dtype) -> bool:
    """Return whether `threefry_normal` can reproduce `jax.random.normal` for these arguments."""
    if str(jax.random.key_impl(key)) != "threefry2x32":
        return False
    # JAX's other layout of the counters (jax_threefry_partitionable=False) is not reproduced.
    if not jax.config.jax_threefry_partitionable:
        return False
    return jnp.dtype(dtype) in (jnp.float32, jnp.float64) and math.prod(shape) < 2**32


def _random_bits(key, shape: tuple[int, ...], width: int):
    """Return `width`-bit random words as `jax.random.bits` draws them from a Threefry key (counters below 2^32)."""
    key1, key2 = jax.random.key_data(key)
    counts = lax.iota(jnp.uint32, math.prod(shape))
    # The counter is the flat index as a 64-bit number split into two words, whose high word is 0 here.
    bits1, bits2 = threefry2x32(key1, key2, jnp.zeros_like(counts), counts)
    if width == 32:
        return (bits1 ^ bits2).reshape(shape)
    return ((bits1.astype(jnp.uint64) << np.uint64(32)) | bits2.astype(jnp.uint64)).reshape(shape)


def threefry_normal(key: PRNGKeyArray, shape: tuple[int, ...], dtype=jnp.float32) -> Float[Array, "..."]:
    """Draw standard normals of `shape` equal to `jax.random.normal(key, shape, dtype)` for a Threefry key.

    The words become uniforms on [nextafter(-1, 0), 1) through their mantissa
    bits and then normals through `sqrt(2) erfinv(u)`, the steps of JAX's own
    sampler. Keys of other implementations, other dtypes, and draws of 2^32
    values or more fall back to `jax.random.normal`.
    """
    shape = tuple(int(size) for size in shape)
    if not _has_unrolled_path(key, shape, dtype):
        return jax.random.normal(key, shape, dtype)

    finfo = jnp.finfo(dtype)
    unsigned = jnp.uint32 if finfo.bits == 32 else jnp.uint64
    bits = _random_bits(key, shape, finfo.bits)

    # The mantissa bits under the exponent of 1.0 give a float in [1, 2).
    one = np.array(1.0, dtype).view(unsigned)
    mantissa = (bits >> np.array(finfo.bits - finfo.nmant, unsigned)) | one
    unit = lax.bitcast_convert_type(mantissa, dtype) - np.array(1.0, dtype)
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    high = np.array(1.0, dtype)
    uniform = lax.max(low, unit * (high - low) + low)
    return np.array(np.sqrt(2), dtype) * lax.erf_inv(uniform)

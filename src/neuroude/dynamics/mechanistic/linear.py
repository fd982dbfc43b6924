"""Linear dynamical system, the reference model for latent-state fitting."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ...errors import ConfigError
from .base import ConstantSpec, check_size_and_key, init_constants

# The model has no scalar constants: A, B and b are learnable arrays.
CONSTANTS: dict[str, ConstantSpec] = {}


class LinearDynamics(eqx.Module):
    """Linear drift in seconds.

        dx/dt = A x + B u + b

    `A` (N x N, 1/s) is the dynamics matrix, `B` (N x inputs) the input weights
    and `b` (N) the offset, all learnable arrays. All states are observable.

    `A` starts as `-I / tau + R`, with `R` a normal random matrix rescaled to
    spectral norm `coupling / tau`. Every eigenvalue of `A` then has a real part
    of at most `-(1 - coupling) / tau`, so the initial system is stable for
    `coupling < 1` whatever the draw. `tau` (seconds, default 0.1) is the
    initial decay time. `B` starts with entries of standard deviation
    1/sqrt(inputs) and `b` at 0.
    """

    A: Float[Array, "n n"]
    B: Float[Array, "n m"]
    b: Float[Array, " n"]
    observable: tuple[int, ...] = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(
        self,
        input_size: int = 0,
        size: int = 2,
        key: PRNGKeyArray | None = None,
        tau: float = 0.1,
        coupling: float = 0.5,
        frozen: tuple[str, ...] = (),
        **values: float,
    ):
        check_size_and_key("linear dynamics", size, key, "states")
        if not (math.isfinite(tau) and tau > 0):
            raise ConfigError(f"linear dynamics tau is {tau}; expected a decay time in seconds > 0")
        if not (math.isfinite(coupling) and 0 <= coupling < 1):
            raise ConfigError(f"linear dynamics coupling is {coupling}; expected a value in [0, 1) for a stable start")
        init_constants(self, "linear dynamics", CONSTANTS, frozen, values)

        matrix_key, input_key = jax.random.split(key)
        random_part = jax.random.normal(matrix_key, (size, size), dtype=jnp.float32)
        spectral_norm = jnp.linalg.norm(random_part, ord=2)
        random_part = random_part * (coupling / tau) / spectral_norm
        self.A = random_part - jnp.eye(size, dtype=jnp.float32) / tau
        inputs = jax.random.normal(input_key, (size, input_size), dtype=jnp.float32)
        self.B = inputs / math.sqrt(max(input_size, 1))
        self.b = jnp.zeros((size,), dtype=jnp.float32)
        self.observable = tuple(range(size))
        self.state_size = size

    def __call__(self, t, x: Float[Array, " n"], u: Float[Array, " m"]) -> Float[Array, " n"]:
        return self.A @ x + self.B @ u + self.b

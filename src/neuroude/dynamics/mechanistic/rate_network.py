"""Random recurrent rate network with a tanh nonlinearity."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ...errors import ConfigError
from ..parameters import Constant
from .base import ConstantSpec, check_size_and_key, init_constants

# 10 ms, the unit time constant of the rate networks of Sussillo & Abbott (2009), Neuron 63:544-557.
CONSTANTS = {
    "tau": ConstantSpec(0.01, unit="s"),
}


class RateNetwork(eqx.Module):
    """Rate network drift in seconds.

        tau dx/dt = -x + J tanh(x) + B u + b

    `x` (N units) are the units' activations, `J` (N x N) the recurrent weights,
    `B` (N x inputs) the input weights and `b` (N) the biases, all learnable
    arrays. `tau` (seconds, default 10 ms) is the unit time constant.

    `J` starts with independent entries drawn from a normal distribution with
    standard deviation g/sqrt(N) (`gain`). Without input and bias the origin is
    then a fixed point whose Jacobian `(J - I) / tau` has its eigenvalues in a
    disc of radius about g / tau around -1 / tau, so for large N the network
    decays to rest for g < 1 and becomes chaotic for g > 1 (Sompolinsky,
    Crisanti & Sommers 1988, Phys Rev Lett 61:259-262). `B` starts with entries
    of standard deviation 1/sqrt(inputs) and `b` at 0. All units are observable.

    `tau` is a `Constant`: pass `frozen=("tau",)` to keep it fixed.
    """

    tau: Constant
    J: Float[Array, "n n"]
    B: Float[Array, "n m"]
    b: Float[Array, " n"]
    observable: tuple[int, ...] = eqx.field(static=True)
    state_size: int = eqx.field(static=True)

    def __init__(
        self,
        input_size: int = 0,
        size: int = 16,
        key: PRNGKeyArray | None = None,
        gain: float = 0.9,
        frozen: tuple[str, ...] = (),
        **values: float,
    ):
        check_size_and_key("rate network", size, key, "units")
        if not (math.isfinite(gain) and gain >= 0):
            raise ConfigError(f"rate network gain is {gain}; expected a finite value >= 0")
        init_constants(self, "rate network", CONSTANTS, frozen, values)

        recurrent_key, input_key = jax.random.split(key)
        recurrent = jax.random.normal(recurrent_key, (size, size), dtype=jnp.float32)
        self.J = recurrent * (gain / math.sqrt(size))
        inputs = jax.random.normal(input_key, (size, input_size), dtype=jnp.float32)
        self.B = inputs / math.sqrt(max(input_size, 1))
        self.b = jnp.zeros((size,), dtype=jnp.float32)
        self.observable = tuple(range(size))
        self.state_size = size

    def __call__(self, t, x: Float[Array, " n"], u: Float[Array, " m"]) -> Float[Array, " n"]:
        return (-x + self.J @ jnp.tanh(x) + self.B @ u + self.b) / self.tau.value

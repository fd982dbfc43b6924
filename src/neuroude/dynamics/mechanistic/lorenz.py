"""Lorenz system: a chaotic test system with a known attractor."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# Lorenz (1963), J Atmos Sci 20:130-141: sigma = 10, rho = 28, beta = 8/3.
CONSTANTS = {
    "sigma": ConstantSpec(10.0, unit="dimensionless"),
    "rho": ConstantSpec(28.0, unit="dimensionless"),
    "beta": ConstantSpec(8.0 / 3.0, unit="dimensionless"),
    "time_scale": ConstantSpec(10.0, unit="1/s"),
}


class Lorenz(eqx.Module):
    """Lorenz drift in seconds.

        dx/dt = k * (sigma * (y - x) + I(u))
        dy/dt = k * (x * (rho - z) - y)
        dz/dt = k * (x * y - beta * z)
        I(u)  = G u

    The state is `(x, y, z)`. `sigma`, `rho` and `beta` are dimensionless with Lorenz's (1963) values 10,
    28 and 8/3 as defaults, for which the flow has the chaotic Lorenz attractor.
    `k` (`time_scale`, 1/s, default 10) converts the dimensionless time into
    seconds. `G` (1 x inputs) maps the encoded stimulus onto `dx/dt`. All three
    states are observable (`observable = (0, 1, 2)`).

    Each constant is a `Constant`: pass `frozen=("sigma", ...)` to keep some fixed.
    """

    sigma: Constant
    rho: Constant
    beta: Constant
    time_scale: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0, 1, 2))
    state_size: int = eqx.field(static=True, default=3)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Lorenz", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size)

    def __call__(self, t, x: Float[Array, " 3"], u: Float[Array, " m"]) -> Float[Array, " 3"]:
        x1, x2, x3 = x[0], x[1], x[2]
        dx1 = self.sigma.value * (x2 - x1) + jnp.dot(self.input_gain, u)
        dx2 = x1 * (self.rho.value - x3) - x2
        dx3 = x1 * x2 - self.beta.value * x3
        return self.time_scale.value * jnp.stack([dx1, dx2, dx3])

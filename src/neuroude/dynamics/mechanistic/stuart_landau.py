"""Stuart-Landau oscillator: the normal form of a supercritical Hopf bifurcation."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

CONSTANTS = {
    "mu": ConstantSpec(1.0, "real", unit="1/s"),
    "omega": ConstantSpec(2.0 * math.pi * 10.0, unit="rad/s"),
}


class StuartLandau(eqx.Module):
    """Stuart-Landau drift in seconds, written for `z = x + i y`.

        dz/dt = (mu + i omega) z - |z|^2 z + I(u)
        dx/dt = mu x - omega y - (x^2 + y^2) x + I(u)
        dy/dt = omega x + mu y - (x^2 + y^2) y
        I(u)  = G u

    This is the normal form of a supercritical Hopf bifurcation. For `mu > 0`
    every non-zero state settles on the circle of radius `sqrt(mu)` and turns at
    `omega` rad/s. For `mu < 0` the origin is a stable focus. `mu` (1/s, real,
    default 1) is the distance from the bifurcation and `omega` (rad/s,
    positive, default 2 pi 10, a 10 Hz rhythm) the angular frequency. The cubic
    coefficient is fixed at 1 per second, which sets the amplitude scale. The
    input drives the real part: `G` (1 x inputs) maps the encoded stimulus onto
    `dx/dt`. Both states are observable (`observable = (0, 1)`).

    Each constant is a `Constant`: pass `frozen=("omega", ...)` to keep some fixed.
    """

    mu: Constant
    omega: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0, 1))
    state_size: int = eqx.field(static=True, default=2)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Stuart-Landau", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size)

    def __call__(self, t, x: Float[Array, " 2"], u: Float[Array, " m"]) -> Float[Array, " 2"]:
        re, im = x[0], x[1]
        mu, omega = self.mu.value, self.omega.value
        radius_squared = re**2 + im**2
        d_re = mu * re - omega * im - radius_squared * re + jnp.dot(self.input_gain, u)
        d_im = omega * re + mu * im - radius_squared * im
        return jnp.stack([d_re, d_im])

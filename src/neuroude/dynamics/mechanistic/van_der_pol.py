"""Van der Pol relaxation oscillator."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# van der Pol (1926), Phil Mag 2:978-992. The limit-cycle period at mu = 1 is
# about 6.663 in dimensionless time, so time_scale = 50/s gives about 7.5 Hz.
CONSTANTS = {
    "mu": ConstantSpec(1.0, unit="dimensionless"),
    "time_scale": ConstantSpec(50.0, unit="1/s"),
    "i_ext": ConstantSpec(0.0, "real", unit="dimensionless forcing"),
}


class VanDerPol(eqx.Module):
    """Van der Pol drift in seconds, as a first-order system.

        dx/dt = k * y
        dy/dt = k * (mu * (1 - x^2) * y - x + I(u))
        I(u)  = i_ext + G u

    This is `x'' - mu (1 - x^2) x' + x = I` in the dimensionless time `k t`.
    `mu` (dimensionless, positive, default 1) sets the nonlinear damping. Every
    non-zero state settles on one limit cycle, near-sinusoidal for small `mu`
    and a relaxation oscillation for large `mu`, with period about 6.663 / k at
    `mu = 1`. `k` (`time_scale`, 1/s, default 50) converts the dimensionless
    time into seconds. `i_ext` is a constant forcing and `G` (1 x inputs) maps
    the encoded stimulus onto the forcing. Only `x` is observable by default
    (`observable = (0,)`).

    Each constant is a `Constant`: pass `frozen=("mu", ...)` to keep some fixed.
    """

    mu: Constant
    time_scale: Constant
    i_ext: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0,))
    state_size: int = eqx.field(static=True, default=2)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Van der Pol", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size)

    def __call__(self, t, x: Float[Array, " 2"], u: Float[Array, " m"]) -> Float[Array, " 2"]:
        position, velocity = x[0], x[1]
        forcing = self.i_ext.value + jnp.dot(self.input_gain, u)
        d_position = velocity
        d_velocity = self.mu.value * (1.0 - position**2) * velocity - position + forcing
        return self.time_scale.value * jnp.stack([d_position, d_velocity])

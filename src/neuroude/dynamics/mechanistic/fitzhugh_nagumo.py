"""FitzHugh-Nagumo excitable neuron."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ...errors import ConfigError
from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# FitzHugh (1961), Biophys J 1:445-466: a = 0.7, b = 0.8, tau = 12.5 (dimensionless time).
CONSTANTS = {
    "a": ConstantSpec(0.7, unit="dimensionless"),
    "b": ConstantSpec(0.8, unit="dimensionless"),
    "tau": ConstantSpec(12.5, unit="dimensionless time"),
    "time_scale": ConstantSpec(100.0, unit="1/s"),
    "i_ext": ConstantSpec(0.0, "real", unit="dimensionless current"),
}

# Terms that `FitzHughNagumo.drift_with` can replace by a closure.
TERMS = {
    "recovery": "right-hand side (v + a - b w) / tau of the recovery equation, a function of the state (v, w) -> scalar",
    "cubic": "fast nonlinearity v - v^3 / 3, a function of v -> scalar",
}

# Input and output size of each term, in the convention of eqx.nn.MLP ("scalar" is a 0-d array).
TERM_SIZES = {"recovery": (2, "scalar"), "cubic": ("scalar", "scalar")}


class FitzHughNagumo(eqx.Module):
    """FitzHugh-Nagumo drift in seconds.

        dv/dt = k * (v - v^3 / 3 - w + I(u))
        dw/dt = k * (v + a - b * w) / tau
        I(u)  = i_ext + G u

    State `x = (v, w)`: `v` is the fast membrane-potential-like variable, `w` the
    slow recovery variable. `a`, `b` and `tau` are dimensionless with FitzHugh's
    (1961) values 0.7, 0.8 and 12.5 as defaults. `k` (`time_scale`, 1/s) converts
    the model's dimensionless time into seconds. `i_ext` is a constant current and
    `G` (1 x inputs) maps the encoded stimulus onto injected current. Only `v` is
    observable by default (`observable = (0,)`).

    Each constant is a `Constant`: pass `frozen=("a", ...)` to keep some fixed.

    `drift_with` replaces the terms named in `TERMS` by other functions (a
    neural closure). Constants that enter only a replaced term, such as `a`,
    `b` and `tau` when "recovery" is replaced, then no longer affect the drift.
    """

    a: Constant
    b: Constant
    tau: Constant
    time_scale: Constant
    i_ext: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0,))
    state_size: int = eqx.field(static=True, default=2)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "FitzHugh-Nagumo", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size)

    def __call__(self, t, x: Float[Array, " 2"], u: Float[Array, " m"]) -> Float[Array, " 2"]:
        return self.drift_with(t, x, u, {})

    def drift_with(
        self, t, x: Float[Array, " 2"], u: Float[Array, " m"], closures: Mapping[str, Callable]
    ) -> Float[Array, " 2"]:
        """Evaluate the drift with the terms named in `closures` replaced.

            dv/dt = k * (cubic(v) - w + I(u))
            dw/dt = k * recovery(v, w)

        `closures["recovery"]` is called with the state `x` (shape (2,)) and
        `closures["cubic"]` with `v` (a 0-d array). Each returns a 0-d array.
        A term missing from `closures` keeps its mechanistic form, and
        `drift_with(t, x, u, {})` returns `self(t, x, u)` bit for bit.
        Raises ConfigError for a name that is not in `TERMS`.
        """
        unknown = sorted(set(closures) - set(TERMS))
        if unknown:
            raise ConfigError(f"unknown FitzHugh-Nagumo closure terms {unknown}; expected some of {sorted(TERMS)}")

        v, w = x[0], x[1]
        current = self.i_ext.value + jnp.dot(self.input_gain, u)
        cubic = closures["cubic"](v) if "cubic" in closures else v - v**3 / 3.0
        dv = cubic - w + current
        if "recovery" in closures:
            dw = closures["recovery"](x)
        else:
            dw = (v + self.a.value - self.b.value * w) / self.tau.value
        return self.time_scale.value * jnp.stack([dv, dw])

"""Wilson-Cowan model of an excitatory and an inhibitory population."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ...errors import ConfigError
from ..parameters import Constant
from .base import ConstantSpec, init_constants

# Wilson & Cowan (1972), Biophys J 12:1-24, limit-cycle set: c1..c4 = 16, 12, 15, 3,
# a_e = 1.3, theta_e = 4, a_i = 2, theta_i = 3.7, r_e = r_i = 1, P = 1.25, Q = 0.
# The time constants of 10 ms are this package's choice.
CONSTANTS = {
    "tau_e": ConstantSpec(0.01, unit="s"),
    "tau_i": ConstantSpec(0.01, unit="s"),
    "w_ee": ConstantSpec(16.0, unit="dimensionless"),
    "w_ei": ConstantSpec(12.0, unit="dimensionless"),
    "w_ie": ConstantSpec(15.0, unit="dimensionless"),
    "w_ii": ConstantSpec(3.0, unit="dimensionless"),
    "gain_e": ConstantSpec(1.3, unit="dimensionless"),
    "threshold_e": ConstantSpec(4.0, "real", unit="dimensionless"),
    "gain_i": ConstantSpec(2.0, unit="dimensionless"),
    "threshold_i": ConstantSpec(3.7, "real", unit="dimensionless"),
    "refractory_e": ConstantSpec(1.0, unit="dimensionless"),
    "refractory_i": ConstantSpec(1.0, unit="dimensionless"),
    "drive_e": ConstantSpec(1.25, "real", unit="dimensionless"),
    "drive_i": ConstantSpec(0.0, "real", unit="dimensionless"),
}

# Initial weight of the encoded input onto the excitatory drive. The input onto
# the inhibitory drive starts at 0 and is learned like any other weight.
INPUT_SCALE = 0.5

# Terms that `WilsonCowan.drift_with` can replace by a closure.
TERMS = {
    "sigmoid": (
        "response functions (S_e(z), S_i(z)) of the two populations, a function of one input z -> 2 values. "
        "The excitatory population reads the first value at its input, the inhibitory one the second at its own"
    ),
}

# Input and output size of each term, in the convention of eqx.nn.MLP ("scalar" is a 0-d array).
TERM_SIZES = {"sigmoid": ("scalar", 2)}


def wilson_cowan_sigmoid(x: Float[Array, "..."], gain: Float[Array, ""], threshold: Float[Array, ""]):
    """Return the Wilson-Cowan response `1/(1 + exp(-a (x - theta))) - 1/(1 + exp(a theta))`.

    The offset makes the response 0 at `x = 0`.
    """
    return jax.nn.sigmoid(gain * (x - threshold)) - jax.nn.sigmoid(-gain * threshold)


class WilsonCowan(eqx.Module):
    """Wilson-Cowan drift in seconds.

        tau_e dE/dt = -E + (k_e - r_e E) S_e(w_ee E - w_ei I + P + G_e u)
        tau_i dI/dt = -I + (k_i - r_i I) S_i(w_ie E - w_ii I + Q + G_i u)
        S(x)        = 1 / (1 + exp(-a (x - theta))) - 1 / (1 + exp(a theta))
        k           = S(+inf) = 1 - 1 / (1 + exp(a theta))

    State `x = (E, I)`: the fractions of excitatory and inhibitory cells firing
    per unit time. `w_ee` is the weight from E onto E, `w_ei` from I onto E,
    `w_ie` from E onto I and `w_ii` from I onto I. Each population's sigmoid has
    gain `a` (`gain_e`, `gain_i`) and threshold `theta` (`threshold_e`,
    `threshold_i`). `r` (`refractory_e`, `refractory_i`) is the refractory
    factor, and `k` is set to the sigmoid's maximum S(+inf). `P` (`drive_e`)
    and `Q` (`drive_i`) are constant external drives.

    Defaults are the limit-cycle set of Wilson & Cowan (1972): w_ee, w_ei, w_ie,
    w_ii = 16, 12, 15, 3, a_e = 1.3, theta_e = 4, a_i = 2, theta_i = 3.7,
    r_e = r_i = 1, P = 1.25 and Q = 0, all dimensionless. The time constants
    `tau_e = tau_i = 10 ms` are this package's choice. With these constants
    the state settles on a limit cycle of period 4.996 tau when
    `tau_e = tau_i = tau`, which is 50 ms (a 20 Hz rhythm) at the default.

    The matrix `G` (2 x inputs) maps the encoded stimulus onto both drives. It
    starts at 0.5 for E and 0 for I. Only E is observable by default
    (`observable = (0,)`).

    Each constant is a `Constant`: pass `frozen=("w_ee", ...)` to keep some fixed.

    `drift_with` replaces the response functions S_e and S_i by another
    function (a neural closure).
    """

    tau_e: Constant
    tau_i: Constant
    w_ee: Constant
    w_ei: Constant
    w_ie: Constant
    w_ii: Constant
    gain_e: Constant
    threshold_e: Constant
    gain_i: Constant
    threshold_i: Constant
    refractory_e: Constant
    refractory_i: Constant
    drive_e: Constant
    drive_i: Constant
    input_gain: Float[Array, "2 m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0,))
    state_size: int = eqx.field(static=True, default=2)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Wilson-Cowan", CONSTANTS, frozen, values)
        gain = jnp.zeros((2, input_size), dtype=jnp.float32)
        self.input_gain = gain.at[0].set(INPUT_SCALE)

    def __call__(self, t, x: Float[Array, " 2"], u: Float[Array, " m"]) -> Float[Array, " 2"]:
        return self.drift_with(t, x, u, {})

    def drift_with(
        self, t, x: Float[Array, " 2"], u: Float[Array, " m"], closures: Mapping[str, Callable]
    ) -> Float[Array, " 2"]:
        """Evaluate the drift with the response functions replaced when `closures` names them.

            tau_e dE/dt = -E + (k_e - r_e E) H(z_e)[0],   z_e = w_ee E - w_ei I + P + G_e u
            tau_i dI/dt = -I + (k_i - r_i I) H(z_i)[1],   z_i = w_ie E - w_ii I + Q + G_i u

        `closures["sigmoid"]` is H: called with one input (a 0-d array), it
        returns the pair (S_e, S_i), so each population has its own response
        function. The maxima `k_e` and `k_i` stay those of the mechanistic
        sigmoids, computed from the gain and threshold constants. Without a
        closure H is the pair of mechanistic sigmoids, and
        `drift_with(t, x, u, {})` returns `self(t, x, u)` bit for bit.
        Raises ConfigError for a name that is not in `TERMS`.
        """
        unknown = sorted(set(closures) - set(TERMS))
        if unknown:
            raise ConfigError(f"unknown Wilson-Cowan closure terms {unknown}; expected some of {sorted(TERMS)}")

        rate_e, rate_i = x[0], x[1]
        external = self.input_gain @ u
        input_e = self.w_ee.value * rate_e - self.w_ei.value * rate_i + self.drive_e.value + external[0]
        input_i = self.w_ie.value * rate_e - self.w_ii.value * rate_i + self.drive_i.value + external[1]

        gain_e, threshold_e = self.gain_e.value, self.threshold_e.value
        gain_i, threshold_i = self.gain_i.value, self.threshold_i.value
        max_e = 1.0 - jax.nn.sigmoid(-gain_e * threshold_e)
        max_i = 1.0 - jax.nn.sigmoid(-gain_i * threshold_i)
        if "sigmoid" in closures:
            response_e = closures["sigmoid"](input_e)[0]
            response_i = closures["sigmoid"](input_i)[1]
        else:
            response_e = wilson_cowan_sigmoid(input_e, gain_e, threshold_e)
            response_i = wilson_cowan_sigmoid(input_i, gain_i, threshold_i)

        d_rate_e = (-rate_e + (max_e - self.refractory_e.value * rate_e) * response_e) / self.tau_e.value
        d_rate_i = (-rate_i + (max_i - self.refractory_i.value * rate_i) * response_i) / self.tau_i.value
        return jnp.stack([d_rate_e, d_rate_i])

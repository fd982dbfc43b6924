"""Hodgkin-Huxley model of the squid giant axon membrane."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# Dayan & Abbott (2001), Theoretical Neuroscience, section 5.6, converted from per mm^2 to per cm^2.
CONSTANTS = {
    "c_m": ConstantSpec(1.0, unit="uF/cm^2"),
    "g_na": ConstantSpec(120.0, unit="mS/cm^2"),
    "g_k": ConstantSpec(36.0, unit="mS/cm^2"),
    "g_l": ConstantSpec(0.3, unit="mS/cm^2"),
    "e_na": ConstantSpec(50.0, "real", unit="mV"),
    "e_k": ConstantSpec(-77.0, "real", unit="mV"),
    "e_l": ConstantSpec(-54.387, "real", unit="mV"),
    "i_ext": ConstantSpec(0.0, "real", unit="uA/cm^2"),
}

# Injected current (uA/cm^2) per unit of encoded input at initialisation. At 10 uA/cm^2
# the default axon fires repetitively, so an encoded input of order 1 spans rest to firing.
INPUT_SCALE = 10.0

# The rate functions are per ms and the drift is per s.
MS_PER_S = 1000.0

# Resting potential of the axon at the default constants, in mV.
RESTING_POTENTIAL = -65.0

# Below this |z|, z / (1 - exp(-z)) is evaluated by its Taylor series (error below 1e-14).
SERIES_RADIUS = 1e-3


def _z_over_one_minus_exp(z: Float[Array, "..."]) -> Float[Array, "..."]:
    """Evaluate z / (1 - exp(-z)) with its removable singularity at z = 0 filled in, gradients included.

    The direct formula is 0/0 at z = 0, and `jnp.where` alone would still send a NaN
    gradient through the unused branch, so that branch gets a harmless argument.
    """
    near_zero = jnp.abs(z) < SERIES_RADIUS
    z_safe = jnp.where(near_zero, 1.0, z)
    direct = z_safe / -jnp.expm1(-z_safe)
    series = 1.0 + z / 2.0 + z**2 / 12.0
    return jnp.where(near_zero, series, direct)


def rate_constants(v: Float[Array, "..."]) -> tuple[Float[Array, "..."], ...]:
    """Return the opening and closing rates (alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n) in 1/ms at `v` mV."""
    alpha_m = _z_over_one_minus_exp((v + 40.0) / 10.0)
    beta_m = 4.0 * jnp.exp(-(v + 65.0) / 18.0)
    alpha_h = 0.07 * jnp.exp(-(v + 65.0) / 20.0)
    beta_h = 1.0 / (1.0 + jnp.exp(-(v + 35.0) / 10.0))
    alpha_n = 0.1 * _z_over_one_minus_exp((v + 55.0) / 10.0)
    beta_n = 0.125 * jnp.exp(-(v + 65.0) / 80.0)
    return alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n


def steady_state(v: Float[Array, ""]) -> Float[Array, " 4"]:
    """Return the state (v, m, h, n) with each gate at its steady-state value for a clamped `v` mV."""
    alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n = rate_constants(jnp.asarray(v, jnp.float32))
    m = alpha_m / (alpha_m + beta_m)
    h = alpha_h / (alpha_h + beta_h)
    n = alpha_n / (alpha_n + beta_n)
    return jnp.stack([jnp.asarray(v, m.dtype), m, h, n])


class HodgkinHuxley(eqx.Module):
    """Hodgkin-Huxley drift in seconds (membrane potential in mV, time constants in ms inside).

        C_m dV/dt = I(u) - g_Na m^3 h (V - E_Na) - g_K n^4 (V - E_K) - g_L (V - E_L)
        dz/dt     = alpha_z(V) (1 - z) - beta_z(V) z        for each gate z in (m, h, n)
        I(u)      = i_ext + G u

    with the rate functions, in 1/ms for V in mV (modern sign convention, rest near -65 mV):

        alpha_m = 0.1 (V + 40) / (1 - exp(-(V + 40) / 10))    beta_m = 4 exp(-(V + 65) / 18)
        alpha_h = 0.07 exp(-(V + 65) / 20)                     beta_h = 1 / (1 + exp(-(V + 35) / 10))
        alpha_n = 0.01 (V + 55) / (1 - exp(-(V + 55) / 10))   beta_n = 0.125 exp(-(V + 65) / 80)

    The right-hand sides are multiplied by 1000 so that time is in seconds. The
    removable singularities of alpha_m at V = -40 mV and alpha_n at V = -55 mV are
    filled in with their limits (1 and 0.1 per ms) and have finite gradients.

    Constants and defaults (Hodgkin & Huxley 1952, at 6.3 degrees C, in the form and
    shifted voltage convention of Dayan & Abbott 2001, Theoretical Neuroscience,
    section 5.6, where Dayan & Abbott write 0.0556 for 1/18):

        c_m  = 1 uF/cm^2       membrane capacitance
        g_na = 120 mS/cm^2     maximal sodium conductance
        g_k  = 36 mS/cm^2      maximal potassium conductance
        g_l  = 0.3 mS/cm^2     leak conductance
        e_na = 50 mV           sodium reversal potential
        e_k  = -77 mV          potassium reversal potential
        e_l  = -54.387 mV      leak reversal potential, chosen so the axon rests near -65 mV
        i_ext = 0 uA/cm^2      constant injected current density

    State `x = (V, m, h, n)`. In the exact flow the gates stay in [0, 1], because
    each gate's drift points inward at 0 and 1. `G` (one weight per input, initially 10 uA/cm^2)
    maps the encoded input onto injected current density. Only `V` is observable by
    default (`observable = (0,)`). `resting_state()` returns a physiological initial state.

    Each constant is a `Constant`: pass `frozen=("e_na", ...)` to keep some fixed.
    """

    c_m: Constant
    g_na: Constant
    g_k: Constant
    g_l: Constant
    e_na: Constant
    e_k: Constant
    e_l: Constant
    i_ext: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0,))
    state_size: int = eqx.field(static=True, default=4)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Hodgkin-Huxley", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size, INPUT_SCALE)

    def __call__(self, t, x: Float[Array, " 4"], u: Float[Array, " m"]) -> Float[Array, " 4"]:
        v, m, h, n = x[0], x[1], x[2], x[3]
        current = self.i_ext.value + jnp.dot(self.input_gain, u)

        sodium = self.g_na.value * m**3 * h * (v - self.e_na.value)
        potassium = self.g_k.value * n**4 * (v - self.e_k.value)
        leak = self.g_l.value * (v - self.e_l.value)
        dv = (current - sodium - potassium - leak) / self.c_m.value

        alpha_m, beta_m, alpha_h, beta_h, alpha_n, beta_n = rate_constants(v)
        dm = alpha_m * (1.0 - m) - beta_m * m
        dh = alpha_h * (1.0 - h) - beta_h * h
        dn = alpha_n * (1.0 - n) - beta_n * n
        return MS_PER_S * jnp.stack([dv, dm, dh, dn])

    @staticmethod
    def initial_state_prior() -> tuple[Float[Array, " 4"], tuple[float, ...]]:
        """Return location and scale of the prior of the initial state: the resting state, 10 mV and 0.1 per gate.

        The recognition model's standard-unit output is mapped through them, so a fit starts
        near rest instead of at V = 0 mV with gates outside [0, 1].
        """
        return HodgkinHuxley.resting_state(), (10.0, 0.1, 0.1, 0.1)

    @staticmethod
    def resting_state() -> Float[Array, " 4"]:
        """Return a physiological initial state: -65 mV with each gate at its steady state there.

        -65 mV is the resting potential of the default constants (the value `e_l` is chosen for).
        """
        return steady_state(RESTING_POTENTIAL)


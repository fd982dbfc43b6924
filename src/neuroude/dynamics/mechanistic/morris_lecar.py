"""Morris-Lecar model of the barnacle muscle fibre, a two-variable excitable membrane."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..parameters import Constant
from .base import ConstantSpec, init_constants, input_gain

# Rinzel & Ermentrout (1998), "Analysis of neural excitability and oscillations", in Koch &
# Segev (eds.), Methods in Neuronal Modeling, 2nd ed., the parameter set with a Hopf bifurcation.
CONSTANTS = {
    "c_m": ConstantSpec(20.0, unit="uF/cm^2"),
    "g_ca": ConstantSpec(4.4, unit="mS/cm^2"),
    "g_k": ConstantSpec(8.0, unit="mS/cm^2"),
    "g_l": ConstantSpec(2.0, unit="mS/cm^2"),
    "e_ca": ConstantSpec(120.0, "real", unit="mV"),
    "e_k": ConstantSpec(-84.0, "real", unit="mV"),
    "e_l": ConstantSpec(-60.0, "real", unit="mV"),
    "v1": ConstantSpec(-1.2, "real", unit="mV"),
    "v2": ConstantSpec(18.0, unit="mV"),
    "v3": ConstantSpec(2.0, "real", unit="mV"),
    "v4": ConstantSpec(30.0, unit="mV"),
    "phi": ConstantSpec(0.04, unit="1/ms"),
    "i_ext": ConstantSpec(0.0, "real", unit="uA/cm^2"),
}

# Injected current (uA/cm^2) per unit of encoded input at initialisation. The default
# cell starts firing repetitively near 90 uA/cm^2, so an input of order 1 spans rest to firing.
INPUT_SCALE = 100.0

# The equations are in ms and the drift is per s.
MS_PER_S = 1000.0

# Resting potential of the default constants with no input, in mV (to 0.001 mV).
RESTING_POTENTIAL = -60.855


class MorrisLecar(eqx.Module):
    """Morris-Lecar drift in seconds (membrane potential in mV, time constants in ms inside).

        C_m dV/dt = I(u) - g_Ca m_inf(V) (V - E_Ca) - g_K w (V - E_K) - g_L (V - E_L)
        dw/dt     = phi (w_inf(V) - w) / tau_w(V)
        m_inf(V)  = (1 + tanh((V - V1) / V2)) / 2
        w_inf(V)  = (1 + tanh((V - V3) / V4)) / 2
        tau_w(V)  = 1 / cosh((V - V3) / (2 V4))
        I(u)      = i_ext + G u

    The right-hand sides are multiplied by 1000 so that time is in seconds. The
    calcium current is instantaneous (m = m_inf(V)) and `w` is the fraction of
    open potassium channels.

    Constants and defaults: the Hopf-bifurcation set of Rinzel & Ermentrout (1998),
    "Analysis of neural excitability and oscillations", in Koch & Segev (eds.),
    Methods in Neuronal Modeling, 2nd ed., MIT Press, for the model of Morris &
    Lecar (1981), Biophys J 35:193-213:

        c_m  = 20 uF/cm^2     membrane capacitance
        g_ca = 4.4 mS/cm^2    maximal calcium conductance
        g_k  = 8 mS/cm^2      maximal potassium conductance
        g_l  = 2 mS/cm^2      leak conductance
        e_ca = 120 mV         calcium reversal potential
        e_k  = -84 mV         potassium reversal potential
        e_l  = -60 mV         leak reversal potential
        v1   = -1.2 mV        half-activation of m_inf
        v2   = 18 mV          slope of m_inf
        v3   = 2 mV           half-activation of w_inf
        v4   = 30 mV          slope of w_inf
        phi  = 0.04 1/ms      rate scale of w
        i_ext = 0 uA/cm^2     constant injected current density

    With these constants the cell rests at -60.855 mV. Started from rest, it fires
    repetitively for constant currents from about 90 to above 200 uA/cm^2, at about
    12 Hz for 100 uA/cm^2, and starts firing at a nonzero rate (class II excitability).
    State `x = (V, w)`. `G` (one weight per input, initially 100 uA/cm^2) maps the
    encoded input onto injected current density. Only `V` is observable by default
    (`observable = (0,)`). `resting_state()` returns a physiological initial state.

    Each constant is a `Constant`: pass `frozen=("e_ca", ...)` to keep some fixed.
    """

    c_m: Constant
    g_ca: Constant
    g_k: Constant
    g_l: Constant
    e_ca: Constant
    e_k: Constant
    e_l: Constant
    v1: Constant
    v2: Constant
    v3: Constant
    v4: Constant
    phi: Constant
    i_ext: Constant
    input_gain: Float[Array, " m"]
    observable: tuple[int, ...] = eqx.field(static=True, default=(0,))
    state_size: int = eqx.field(static=True, default=2)

    def __init__(self, input_size: int = 0, frozen: tuple[str, ...] = (), **values: float):
        init_constants(self, "Morris-Lecar", CONSTANTS, frozen, values)
        self.input_gain = input_gain(input_size, INPUT_SCALE)

    def __call__(self, t, x: Float[Array, " 2"], u: Float[Array, " m"]) -> Float[Array, " 2"]:
        v, w = x[0], x[1]
        current = self.i_ext.value + jnp.dot(self.input_gain, u)

        m_inf = 0.5 * (1.0 + jnp.tanh((v - self.v1.value) / self.v2.value))
        calcium = self.g_ca.value * m_inf * (v - self.e_ca.value)
        potassium = self.g_k.value * w * (v - self.e_k.value)
        leak = self.g_l.value * (v - self.e_l.value)
        dv = (current - calcium - potassium - leak) / self.c_m.value

        w_inf = 0.5 * (1.0 + jnp.tanh((v - self.v3.value) / self.v4.value))
        rate = self.phi.value * jnp.cosh((v - self.v3.value) / (2.0 * self.v4.value))
        dw = rate * (w_inf - w)
        return MS_PER_S * jnp.stack([dv, dw])

    def resting_state(self) -> Float[Array, " 2"]:
        """Return a physiological initial state: V at the default resting potential and w at w_inf(V)."""
        v = jnp.asarray(RESTING_POTENTIAL, jnp.float32)
        w = 0.5 * (1.0 + jnp.tanh((v - self.v3.value) / self.v4.value))
        return jnp.stack([v, w])
